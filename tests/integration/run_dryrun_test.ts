/**
 * `nerdbox run --dry-run` against the real libkrun: the exact call list for TSI, one and two
 * networks (applied to a real context, results checked), and the refusals (exit 125, naming the
 * flag) for combinations the plan or libkrun cannot run.
 */
import assert from "node:assert/strict";
import { nerdbox, runArgv } from "../helpers/nerdbox_cli.ts";
import { kvmStatus } from "../../lib/vm/plan.ts";

const NET0 =
  "socket=/run/nb-run-dry/a.sock,mode=unixstream,mac=5A:94:EF:E4:0C:EE,addr=192.168.127.2/24," +
  "features=VIRTIO_NET_F_CSUM|VIRTIO_NET_F_GUEST_CSUM";
const NET1 =
  "socket=/run/nb-run-dry/b.sock,mode=unixgram,mac=02:00:00:00:00:02,dhcp=true,vfkit=true";

interface DryRun {
  backend: string;
  libkrun: string | null;
  plan: { id: string; network: { kind: string }; stateDir: string; accel?: string };
  calls: Array<{ call: string; args: unknown[]; result: number | string }>;
  error?: string;
  libkrunError?: string;
}

let rootfs = "";
async function withRootfs<T>(fn: () => Promise<T>): Promise<T> {
  rootfs = await Deno.makeTempDir({ prefix: "nb-run-dry-" });
  try {
    return await fn();
  } finally {
    await Deno.remove(rootfs, { recursive: true });
  }
}

async function dry(flags: string[], cmd = ["/bin/echo", "hi"]): Promise<DryRun> {
  const r = await nerdbox(["run", "--dry-run", "--json", ...flags, rootfs, "--", ...cmd]);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as DryRun;
}

const names = (d: DryRun) => d.calls.map((c) => c.call);
const call = (d: DryRun, name: string) => d.calls.filter((c) => c.call === name);

function assertApplied(d: DryRun) {
  const ctx = call(d, "krun_create_ctx")[0].result as number;
  assert.ok(typeof ctx === "number" && ctx >= 0);
  for (const c of d.calls) {
    if (c.call === "krun_init_log" || c.call === "krun_start_enter") {
      assert.match(String(c.result), /^not called \(dry run\)/);
    } else if (c.call !== "krun_create_ctx") {
      assert.equal(typeof c.result, "number", `${c.call} was not applied: ${c.result}`);
      assert.ok((c.result as number) >= 0);
      assert.equal(c.args[0], ctx, `${c.call} applies to the created ctx`);
    }
  }
}

Deno.test("dry run, no network: TSI port map, no NIC, every call applied", () =>
  withRootfs(async () => {
    const d = await dry([
      "--backend",
      "libkrun",
      "-p",
      "8080:80",
      "-p",
      "9090:9091",
      "--cpus",
      "2",
      "--memory",
      "1G",
    ]);
    assert.equal(d.backend, "libkrun");
    assert.match(d.libkrun ?? "", /libkrun\.so\.1$/);
    assert.deepEqual(names(d), [
      "krun_init_log",
      "krun_create_ctx",
      "krun_set_vm_config",
      "krun_set_root",
      "krun_add_virtiofs",
      "krun_set_port_map",
      "krun_add_virtio_console_multiport",
      "krun_add_console_port_inout",
      "krun_set_console_output",
      "krun_set_exec",
      "krun_start_enter",
      "krun_free_ctx",
    ]);
    assertApplied(d);
    assert.deepEqual(call(d, "krun_set_vm_config")[0].args.slice(1), [2, 1024]);
    assert.deepEqual(call(d, "krun_set_port_map")[0].args[1], ["8080:80", "9090:9091"]);
    assert.deepEqual(call(d, "krun_add_virtiofs")[0].args.slice(1), ["rootfs", rootfs]);
    const port = call(d, "krun_add_console_port_inout")[0].args;
    assert.equal(port[2], "nerdbox.ctl");
    assert.equal(port[3], port[4]);
    assert.equal(d.plan.network.kind, "tsi");
    // The guest init is the program libkrun runs, with an explicit environment.
    const exec = call(d, "krun_set_exec")[0].args;
    assert.match(exec[1] as string, /\/deno$/);
    assert.ok((exec[2] as string[]).some((a) => a.endsWith("/guest/main.ts")));
    assert.ok((exec[3] as string[]).length > 0);
  }));

Deno.test("dry run, one network: one unixstream NIC with its MAC and features, no port map", () =>
  withRootfs(async () => {
    const d = await dry(["--backend", "libkrun", "--net", NET0]);
    assertApplied(d);
    assert.equal(call(d, "krun_set_port_map").length, 0);
    const nics = call(d, "krun_add_net_unixstream");
    assert.equal(nics.length, 1);
    assert.deepEqual(nics[0].args.slice(1), [
      "/run/nb-run-dry/a.sock",
      -1,
      "5a:94:ef:e4:0c:ee",
      3,
      0,
    ]);
    assert.equal(d.plan.network.kind, "nics");
  }));

Deno.test("dry run, two networks: NICs in order, unixgram with VFKIT, eth0 carries the route", () =>
  withRootfs(async () => {
    const d = await dry(["--backend", "libkrun", "--net", NET0, "--net", NET1]);
    assertApplied(d);
    const nics = d.calls.filter((c) => c.call.startsWith("krun_add_net_"));
    assert.deepEqual(nics.map((c) => [c.call, c.args[1], c.args[3], c.args[5]]), [
      ["krun_add_net_unixstream", "/run/nb-run-dry/a.sock", "5a:94:ef:e4:0c:ee", 0],
      ["krun_add_net_unixgram", "/run/nb-run-dry/b.sock", "02:00:00:00:00:02", 1],
    ]);
    const plan = d.plan as unknown as {
      network: { nics: Array<{ name: string; defaultRoute: boolean; gateway4?: string }> };
    };
    assert.deepEqual(plan.network.nics.map((n) => [n.name, n.defaultRoute, n.gateway4]), [
      ["eth0", true, "192.168.127.1"],
      ["eth1", false, undefined],
    ]);
  }));

Deno.test("dry run, human form lists each call with its result", () =>
  withRootfs(async () => {
    const r = await nerdbox(
      runArgv(rootfs, ["/bin/true"], { backend: "libkrun", flags: ["--dry-run", "--net", NET0] }),
    );
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^backend: libkrun \(.*libkrun\.so\.1\)$/m);
    assert.match(
      r.stdout,
      /^krun_add_net_unixstream\(\d+, "\/run\/nb-run-dry\/a\.sock", -1, "5a:94:ef:e4:0c:ee", 3, 0\) = 0$/m,
    );
    assert.match(r.stdout, /^krun_start_enter\(\d+\)\s+# not called \(dry run\)$/m);
  }));

Deno.test("dry run from an OCI bundle: its process and network annotation apply", async () => {
  const dir = await Deno.makeTempDir({ prefix: "nb-run-dry-bundle-" });
  try {
    await Deno.mkdir(`${dir}/rootfs`);
    await Deno.writeTextFile(
      `${dir}/config.json`,
      JSON.stringify({
        ociVersion: "1.0.2",
        root: { path: "rootfs" },
        process: { args: ["/bin/sh", "-c", "exit 7"], env: ["A=1"], cwd: "/tmp" },
        hostname: "bundled",
        annotations: {
          "io.containerd.nerdbox.network.0": NET1,
          "io.containerd.nerdbox.resources.cpu": "2",
        },
      }),
    );
    const r = await nerdbox([
      "run",
      "--dry-run",
      "--json",
      "--backend",
      "libkrun",
      "-e",
      "B=2",
      "--bundle",
      dir,
    ]);
    assert.equal(r.code, 0, r.stderr);
    const d = JSON.parse(r.stdout) as DryRun & {
      plan: {
        process: { args: string[]; env: string[]; cwd: string };
        hostname: string;
        cpus: number;
        rootfs: string;
      };
    };
    assertApplied(d);
    assert.deepEqual(d.plan.process.args, ["/bin/sh", "-c", "exit 7"]);
    assert.deepEqual(d.plan.process.env, ["A=1", "B=2"]);
    assert.equal(d.plan.process.cwd, "/tmp");
    assert.equal(d.plan.hostname, "bundled");
    assert.equal(d.plan.cpus, 2);
    assert.equal(d.plan.rootfs, `${dir}/rootfs`);
    assert.deepEqual(call(d, "krun_add_net_unixgram")[0].args.slice(1), [
      "/run/nb-run-dry/b.sock",
      -1,
      "02:00:00:00:00:02",
      0,
      1,
    ]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("refused: ports with a network, host address or UDP under TSI (125, naming --publish)", () =>
  withRootfs(async () => {
    const cases: Array<[string[], RegExp]> = [
      [
        ["--net", NET0, "-p", "8080:80"],
        /--publish: ports cannot be published while networks are attached/,
      ],
      [
        ["-p", "127.0.0.1:8080:80"],
        /--publish: "127\.0\.0\.1:8080:80\/tcp": libkrun's TSI port map has no host address/,
      ],
      [
        ["-p", "5353:53/udp"],
        /--publish: "5353:53\/udp": libkrun's TSI port map forwards TCP only/,
      ],
    ];
    for (const [flags, message] of cases) {
      const r = await nerdbox(
        runArgv(rootfs, ["/bin/true"], { backend: "libkrun", flags: ["--dry-run", ...flags] }),
      );
      assert.equal(r.code, 125, `${flags.join(" ")}: ${r.stdout}`);
      assert.match(r.stderr, message);
      assert.equal(r.stdout, "", "nothing planned");
    }
  }));

Deno.test("refused: vnet_hdr with libkrun 1.16 (probed), naming the network and the flag", () =>
  withRootfs(async () => {
    const r = await nerdbox(
      runArgv(rootfs, ["/bin/true"], {
        backend: "libkrun",
        flags: ["--dry-run", "--net", `${NET0},vnet_hdr=true`],
      }),
    );
    assert.equal(r.code, 125);
    assert.match(
      r.stderr,
      /--net #0: vnet_hdr="true": this libkrun does not support NET_FLAG_INCLUDE_VNET_HEADER/,
    );
  }));

Deno.test("bad flags and values: 125 with the parser's message; --help is 0", () =>
  withRootfs(async () => {
    const cases: Array<[string[], RegExp]> = [
      [
        ["--net", "socket=/run/x.sock,mode=unixstream,mac=01:00:00:00:00:01"],
        /--net #0: mac="01:00:00:00:00:01"/,
      ],
      [["--cpus", "0"], /--cpus: "0": expected a whole number of vCPUs/],
      [
        ["--backend", "firecracker"],
        /--backend: "firecracker": expected one of auto, libkrun, qemu/,
      ],
      [["--accel", "hvf"], /--accel: "hvf": expected auto, kvm or tcg/],
      [["--log-level", "loud"], /--log-level: "loud": expected off, error/],
      [["--frobnicate"], /Unknown option '--frobnicate'/],
    ];
    for (const [flags, message] of cases) {
      const r = await nerdbox(["run", "--dry-run", ...flags, rootfs, "--", "/bin/true"]);
      assert.equal(r.code, 125, flags.join(" "));
      assert.match(r.stderr, message);
    }
    const missing = await nerdbox(["run", "--dry-run", `${rootfs}/nope`, "--", "/bin/true"]);
    assert.equal(missing.code, 125);
    assert.match(missing.stderr, /ROOTFS ".*\/nope" is not a directory/);
    const json = await nerdbox(["run", "--json", rootfs, "--", "/bin/true"]);
    assert.equal(json.code, 125);
    assert.match(json.stderr, /--json needs --dry-run/);
    const noCmd = await nerdbox(["run", "--dry-run", rootfs]);
    assert.equal(noCmd.code, 125);
    assert.match(noCmd.stderr, /expected -- CMD/);
    const help = await nerdbox(["run", "--help"]);
    assert.equal(help.code, 0);
    for (
      const flag of [
        "--net",
        "--publish",
        "--cpus",
        "--memory",
        "--env",
        "--workdir",
        "--backend",
        "--accel",
        "--dry-run",
        "--log-level",
        "--netns",
        "--bundle",
      ]
    ) {
      assert.ok(help.stdout.includes(flag), `help mentions ${flag}`);
    }
  }));

Deno.test("dry run under QEMU: the plan with accel, no libkrun calls", () =>
  withRootfs(async () => {
    const d = await dry(["--backend", "qemu", "--accel", "tcg", "-p", "127.0.0.1:8080:80/udp"]);
    assert.equal(d.backend, "qemu");
    assert.deepEqual(d.calls, []);
    assert.equal(d.plan.accel, "tcg");
  }));

Deno.test("dry run with a libkrun that is not there: every call listed, none applied", () =>
  withRootfs(async () => {
    const d = await dry(["--backend", "libkrun", "--libkrun", "/nonexistent/nb/libkrun.so.1"]);
    assert.match(d.libkrunError ?? "", /\/nonexistent\/nb\/libkrun\.so\.1/);
    assert.ok(d.calls.length > 5);
    for (const c of d.calls) assert.match(String(c.result), /not called: libkrun did not load/);
  }));

Deno.test("dry run without --backend: auto picks libkrun only where /dev/kvm runs guests", () =>
  withRootfs(async () => {
    const d = await dry([]);
    assert.equal(d.backend, kvmStatus().usable ? "libkrun" : "qemu");
  }));
