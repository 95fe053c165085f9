/**
 * Host-side cost of `nerdbox run` under libkrun until krun_start_enter, against a minimal script
 * (bench/krun_minimal.ts) that only loads libkrun, configures the same VM and stops at the same
 * point. Both stop right before krun_start_enter (NERDBOX_VMM_STOP_BEFORE_START), so the numbers
 * do not depend on whether this host's KVM can boot guests. Same run, side by side: `deno bench`
 * prints the ratio in the group summary.
 *
 * NERDBOX_BENCH_START=1 adds a group where both really call krun_start_enter and end with this
 * host's start failure (fast without /dev/kvm; ~9 s per run on kvm_pvm machines).
 */
const ROOT = new URL("../", import.meta.url).pathname;
const NERDBOX = `${ROOT}bin/nerdbox`;
const MINIMAL = `${ROOT}bench/krun_minimal.ts`;

const work = await Deno.makeTempDir({ prefix: "nb-bench-run-" });
const rootfs = `${work}/rootfs`;
await Deno.mkdir(rootfs);
const NETS = [
  "--net",
  `socket=${work}/a.sock,mode=unixstream,mac=5a:94:ef:e4:0c:ee,addr=192.168.127.2/24`,
  "--net",
  `socket=${work}/b.sock,mode=unixgram,mac=02:00:00:00:00:02,dhcp=true,vfkit=true`,
];
const RUN = [
  "run",
  "--backend",
  "libkrun",
  "--name",
  "nb-bench-run",
  ...NETS,
  rootfs,
  "--",
  "/bin/true",
];

async function cmd(
  bin: string,
  args: string[],
  env: Record<string, string>,
): Promise<Deno.CommandOutput> {
  return await new Deno.Command(bin, { args, env, stdin: "null", stdout: "piped", stderr: "piped" })
    .output();
}

// The exact call list nerdbox makes for this VM: the baseline replays it.
const dry = await cmd(NERDBOX, ["run", "--dry-run", "--json", ...RUN.slice(1)], {});
if (!dry.success) throw new Error(`dry run failed: ${new TextDecoder().decode(dry.stderr)}`);
await Deno.writeFile(`${work}/calls.json`, dry.stdout);

// Warm the guest image cache so neither side pays for building it.
const stop = { NERDBOX_VMM_STOP_BEFORE_START: "1" };
const warm = await cmd(NERDBOX, RUN, stop);
if (!new TextDecoder().decode(warm.stderr).includes("stopped before krun_start_enter")) {
  throw new Error(
    `nerdbox run did not reach krun_start_enter: ${new TextDecoder().decode(warm.stderr)}`,
  );
}
const minimal = await cmd(Deno.execPath(), [
  "run",
  "-A",
  "--no-check",
  MINIMAL,
  `${work}/calls.json`,
], stop);
if (!minimal.success) {
  throw new Error(`minimal script failed: ${new TextDecoder().decode(minimal.stderr)}`);
}

globalThis.addEventListener("unload", () => Deno.removeSync(work, { recursive: true }));

Deno.bench({
  name: "minimal libkrun script, until krun_start_enter",
  group: "until krun_start_enter",
  baseline: true,
  n: 10,
  warmup: 1,
  async fn() {
    await cmd(Deno.execPath(), ["run", "-A", "--no-check", MINIMAL, `${work}/calls.json`], stop);
  },
});

Deno.bench({
  name:
    "nerdbox run --backend libkrun, until krun_start_enter (issue 14 baseline 4.07×, goal ≤ 1.5×)",
  group: "until krun_start_enter",
  n: 10,
  warmup: 1,
  async fn() {
    await cmd(NERDBOX, RUN, stop);
  },
});

if (Deno.env.get("NERDBOX_BENCH_START")) {
  Deno.bench({
    name: "minimal libkrun script, through the start failure",
    group: "through krun_start_enter",
    baseline: true,
    n: 5,
    async fn() {
      await cmd(Deno.execPath(), ["run", "-A", "--no-check", MINIMAL, `${work}/calls.json`], {});
    },
  });
  Deno.bench({
    name: "nerdbox run --backend libkrun, through the start failure (exit 125)",
    group: "through krun_start_enter",
    n: 5,
    async fn() {
      await cmd(NERDBOX, RUN, {});
    },
  });
}
