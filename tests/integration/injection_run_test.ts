/**
 * Injection through `nerdbox run`: arguments, env values, annotations and socket paths holding
 * spaces, quotes, newlines, `=`, `,` and kernel-parameter look-alikes arrive intact in the plan,
 * reach libkrun only as separate C strings (never in krun_set_exec, whose args/env are nerdbox's
 * own), never reach QEMU's -append, and — end to end in a real QEMU guest — arrive byte for byte
 * in the workload's argv and environment.
 */
import { deepEqual, equal, match, ok } from "node:assert/strict";
import { nerdbox, runArgv } from "../helpers/nerdbox_cli.ts";
import { makeBusyboxRootfs } from "../helpers/rootfs.ts";
import { assertNothingLeft, takeHostSnapshot } from "../helpers/host_snapshot.ts";

const HOSTILE_ARGS = [
  "x",
  "a b",
  '"q"',
  "'s'",
  "l1\nl2",
  "k=v,w",
  "init=/bin/sh panic=0",
  "--",
  "nerdbox.probe",
  "$(id) `id` ;|&",
  "\\ \\\\",
  "tab\there",
  "é\u{1f600}",
];
const SCRIPT = 'printf "<%s>\\n" "$@"; printf "<%s>\\n" "$V" "$W"; pwd';
const ENV = ['V=a b,"c"=d\nnext', "W= lead=trail, "];
const SOCKET = '/tmp/nbx-inj/a,b "q" server=on.sock';
const NET = `"socket=${SOCKET.replaceAll('"', '""')}",mode=unixstream,mac=02:00:00:00:00:01`;

async function dryRun(backend: string, rootfs: string) {
  const r = await nerdbox(
    runArgv(rootfs, ["/bin/sh", "-c", SCRIPT, ...HOSTILE_ARGS], {
      backend: backend,
      name: "nbx-inj-dry",
      flags: ["--dry-run", "--json", ...ENV.flatMap((e) => ["-e", e]), "--net", NET],
    }),
  );
  equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout);
}

Deno.test("injection: dry-run (libkrun): hostile args, env and socket path stay single values", async () => {
  const dir = await Deno.makeTempDir({ prefix: "nbx-inj-" });
  try {
    const out = await dryRun("libkrun", dir);
    deepEqual(out.plan.process.args, ["/bin/sh", "-c", SCRIPT, ...HOSTILE_ARGS]);
    deepEqual(out.plan.process.env.slice(-2), ENV);
    equal(out.plan.network.nics[0].socket, SOCKET);
    const calls = out.calls as { call: string; args: unknown[] }[];
    const net = calls.find((c) => c.call === "krun_add_net_unixstream");
    equal(net?.args[1], SOCKET, "the socket path is one C string argument");
    // The workload's args and env go to the guest over the control channel, never through
    // krun_set_exec (whose argv/env libkrun turns into the guest kernel command line).
    const exec = calls.find((c) => c.call === "krun_set_exec");
    ok(exec, "krun_set_exec is in the call list");
    const execStrings = (exec.args.slice(1) as (string | string[])[]).flat();
    for (const s of [...HOSTILE_ARGS.slice(1), ...ENV, SCRIPT]) {
      ok(
        !execStrings.some((e) => e === s || (s.length > 3 && e.includes(s))),
        `${JSON.stringify(s)} in krun_set_exec`,
      );
    }
    ok(!calls.some((c) => c.call === "krun_set_kernel"), "no user-built kernel command line");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("injection: dry-run (qemu): the plan holds the hostile values exactly", async () => {
  const dir = await Deno.makeTempDir({ prefix: "nbx-inj-" });
  try {
    const out = await dryRun("qemu", dir);
    deepEqual(out.plan.process.args, ["/bin/sh", "-c", SCRIPT, ...HOSTILE_ARGS]);
    deepEqual(out.plan.process.env.slice(-2), ENV);
    equal(out.plan.network.nics[0].socket, SOCKET);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("injection: a process too large for the guest's CONFIG frame is refused up front", async () => {
  const dir = await Deno.makeTempDir({ prefix: "nbx-inj-" });
  try {
    // 600 KB of env: under ARG_MAX for the nerdbox process itself, over the 512 KiB bound.
    // 6 × 100 KB of env: each under MAX_ARG_STRLEN, together over the 512 KiB bound.
    const env = Array.from({ length: 6 }, (_, i) => ["-e", `B${i}=${"x".repeat(100_000)}`]).flat();
    const r = await nerdbox(["run", "--dry-run", "--backend", "qemu", ...env, dir, "--", "true"]);
    equal(r.code, 125);
    match(r.stderr, /args, env and cwd take \d+ bytes as JSON: expected at most 524288/);
    ok(r.stderr.length < 4096, "the error does not echo the 600 KB value");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("injection: a socket path with a newline is refused before QEMU starts, nothing left", async () => {
  const dir = await Deno.makeTempDir({ prefix: "nbx-inj-" });
  const id = `nbx-inj-nl-${crypto.randomUUID().slice(0, 8)}`;
  const before = await takeHostSnapshot({ aspects: ["processes", "runFiles"] });
  try {
    await makeBusyboxRootfs(`${dir}/rootfs`);
    // A real listening socket, so that only the name can be the problem.
    const sock = `${dir}/x\n-object quit.sock`;
    using _provider = Deno.listen({ transport: "unix", path: sock });
    const net = `"socket=${sock}",mode=unixstream,mac=02:00:00:00:00:01`;
    const r = await nerdbox(
      runArgv(`${dir}/rootfs`, ["true"], {
        name: id,
        backend: "qemu",
        accel: "tcg",
        flags: ["--net", net],
      }),
    );
    equal(r.code, 125, r.stderr);
    match(r.stderr, /socket/);
    match(r.stderr, /control characters/);
  } finally {
    await Deno.remove(dir, { recursive: true });
    await assertNothingLeft(before, { aspects: ["processes", "runFiles"], only: new RegExp(id) });
  }
});

Deno.test({
  name: "injection: end to end in a QEMU guest, every argument and env value arrives intact",
  sanitizeResources: false,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "nbx-inj-e2e-" });
    const id = `nbx-inj-e2e-${crypto.randomUUID().slice(0, 8)}`;
    const before = await takeHostSnapshot({ aspects: ["processes", "runFiles", "mounts"] });
    try {
      await makeBusyboxRootfs(`${dir}/rootfs`);
      const workdir = "/tmp/dir with space,comma";
      await Deno.mkdir(`${dir}/rootfs${workdir}`, { recursive: true });
      const r = await nerdbox(
        runArgv(`${dir}/rootfs`, ["/bin/sh", "-c", SCRIPT, ...HOSTILE_ARGS], {
          name: id,
          backend: "qemu",
          accel: "tcg",
          flags: [...ENV.flatMap((e) => ["-e", e]), "-w", workdir],
        }),
      );
      equal(r.code, 0, r.stderr);
      const expected = [
        ...HOSTILE_ARGS.slice(1).map((a) => `<${a}>`),
        ...ENV.map((e) => `<${e.slice(2)}>`),
        workdir,
      ].join("\n") + "\n";
      equal(r.stdout, expected);
    } finally {
      await Deno.remove(dir, { recursive: true });
      await assertNothingLeft(before, {
        aspects: ["processes", "runFiles", "mounts"],
        only: new RegExp(id),
      });
    }
  },
});

Deno.test("injection: dry-run (libkrun): 100 args and a 10 KB env value stay out of krun_set_exec", async () => {
  const dir = await Deno.makeTempDir({ prefix: "nbx-inj-" });
  try {
    const args = Array.from({ length: 100 }, (_, i) => `arg ${i} "${i}"`);
    const big = `BIG=${"v,".repeat(5000)}`;
    const r = await nerdbox(
      runArgv(dir, ["/bin/echo", ...args], {
        backend: "libkrun",
        flags: ["--dry-run", "--json", "-e", big],
      }),
    );
    equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout);
    deepEqual(out.plan.process.args, ["/bin/echo", ...args]);
    equal(out.plan.process.env.at(-1), big);
    const exec = (out.calls as { call: string; args: unknown[] }[])
      .find((c) => c.call === "krun_set_exec");
    ok(exec);
    const strings = (exec.args.slice(1) as (string | string[])[]).flat();
    ok(strings.length < 32, `krun_set_exec carries ${strings.length} strings`);
    ok(!strings.some((s) => s.includes("arg 1") || s.startsWith("BIG=")));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
