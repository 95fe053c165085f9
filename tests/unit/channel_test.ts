/**
 * lib/vm/channel.ts over a real unix socket. The guest end is a scripted stand-in speaking
 * lib/guest_protocol.ts (the real guest init runs only inside a VM; the QEMU tests cover it).
 */
import assert from "node:assert/strict";
import {
  decodeJson,
  encodeFrame,
  encodeJsonFrame,
  type Frame,
  FrameDecoder,
  GUEST_PROTOCOL_VERSION,
  type GuestConfig,
  MsgType,
} from "../../lib/guest_protocol.ts";
import { GuestChannel } from "../../lib/vm/channel.ts";
import { GuestQueryError } from "../../lib/vm/channel_queries.ts";
import { guestErrorExit } from "../../lib/vm/guest_error.ts";
import { buildGuestConfig } from "../../lib/vm/guest_config.ts";
import type { VmExit, VmPlan, VmStdio } from "../../lib/vm/types.ts";
import { parseMac } from "../../lib/spec/mac.ts";
import { checkSocketPath } from "../../lib/spec/socket_path.ts";

const PLAN: VmPlan = {
  id: "chan",
  backend: "libkrun",
  cpus: 1,
  memoryMiB: 512,
  rootfs: "/srv/rootfs",
  process: {
    args: ["/bin/sh", "-c", "cat"],
    env: ["A=1"],
    cwd: "/",
    uid: 0,
    gid: 0,
    terminal: false,
  },
  hostname: "chan",
  network: {
    kind: "nics",
    nics: [{
      name: "eth0",
      socket: checkSocketPath("/run/x.sock", "unixstream"),
      mode: "unixstream",
      mac: parseMac("02:00:00:00:00:01"),
      features: 0,
      vfkit: false,
      vnetHdr: false,
      dhcp: false,
      addrs: ["10.0.0.2/24"],
      defaultRoute: true,
      gateway4: "10.0.0.1",
    }],
  },
  stateDir: "/tmp/none",
};

/** A connected pair: [host conn, stand-in guest conn], plus cleanup. */
async function pair() {
  const dir = await Deno.makeTempDir({ prefix: "nb-chan-" });
  const listener = Deno.listen({ transport: "unix", path: `${dir}/ctl.sock` });
  const [host, guest] = await Promise.all([
    listener.accept(),
    Deno.connect({ transport: "unix", path: `${dir}/ctl.sock` }),
  ]);
  listener.close();
  return {
    host,
    guest,
    async cleanup() {
      try {
        guest.close();
      } catch { /* closed */ }
      await Deno.remove(dir, { recursive: true });
    },
  };
}

/** Reads frames from the guest side until `n` have arrived. */
async function readFrames(conn: Deno.Conn, n: number): Promise<Frame[]> {
  const dec = new FrameDecoder();
  const out: Frame[] = [];
  const buf = new Uint8Array(65536);
  while (out.length < n) {
    const r = await conn.read(buf);
    if (r === null) break;
    out.push(...dec.push(buf.subarray(0, r)));
  }
  return out;
}

function collector() {
  const chunks: Uint8Array[] = [];
  let closed = false;
  const stream = new WritableStream<Uint8Array>({
    write(c) {
      chunks.push(c.slice());
    },
    close() {
      closed = true;
    },
  });
  return {
    stream,
    text: () => new TextDecoder().decode(new Uint8Array(chunks.flatMap((c) => [...c]))),
    closed: () => closed,
  };
}

/** `ch.run` of the test plan, its output into fresh collectors unless `stdio` names streams. */
function startRun(ch: GuestChannel, stdio: Partial<VmStdio> = {}): Promise<VmExit> {
  return ch.run(buildGuestConfig(PLAN, { kind: "virtiofs", tag: "rootfs" }), {
    stdout: collector().stream,
    stderr: collector().stream,
    ...stdio,
  });
}

/** The guest's side of the start: HELLO sent, then CONFIG and STDIN_EOF (no stdin) read back. */
async function guestHello(guest: Deno.Conn): Promise<void> {
  await guest.write(encodeJsonFrame(MsgType.HELLO, 0, { version: GUEST_PROTOCOL_VERSION }));
  await readFrames(guest, 2);
}

Deno.test("buildGuestConfig maps the plan's process and NICs", () => {
  const cfg = buildGuestConfig(PLAN, { kind: "virtiofs", tag: "rootfs" });
  assert.equal(cfg.version, GUEST_PROTOCOL_VERSION);
  assert.deepEqual(cfg.rootfs, { kind: "virtiofs", tag: "rootfs" });
  assert.deepEqual(cfg.process.args, ["/bin/sh", "-c", "cat"]);
  assert.deepEqual(cfg.networks, [{
    mac: "02:00:00:00:00:01",
    dhcp: false,
    addrs: ["10.0.0.2/24"],
    defaultRoute: true,
    gateway4: "10.0.0.1",
  }]);
});

Deno.test("run: HELLO → CONFIG, stdin forwarded with EOF, output copied, EXIT code returned", async () => {
  const p = await pair();
  try {
    const ch = new GuestChannel(p.host);
    const out = collector();
    const err = collector();
    const stdin = ReadableStream.from([new TextEncoder().encode("input")]);
    const done = ch.run(buildGuestConfig(PLAN, { kind: "virtiofs", tag: "rootfs" }), {
      stdin,
      stdout: out.stream,
      stderr: err.stream,
    });
    await p.guest.write(encodeJsonFrame(MsgType.HELLO, 0, { version: GUEST_PROTOCOL_VERSION }));
    const frames = await readFrames(p.guest, 3);
    assert.deepEqual(frames.map((f) => f.type), [MsgType.CONFIG, MsgType.STDIN, MsgType.STDIN_EOF]);
    assert.equal(decodeJson<GuestConfig>(frames[0].payload).hostname, "chan");
    assert.equal(new TextDecoder().decode(frames[1].payload), "input");
    await p.guest.write(encodeFrame(MsgType.STDOUT, 0, new TextEncoder().encode("out!")));
    await p.guest.write(encodeFrame(MsgType.STDERR, 0, new TextEncoder().encode("err!")));
    await p.guest.write(encodeJsonFrame(MsgType.EXIT, 0, { code: 3 }));
    assert.deepEqual(await done, { code: 3 });
    assert.equal(ch.helloSeen, true);
    assert.equal(ch.guestEnded, true);
    assert.equal(out.text(), "out!");
    assert.equal(err.text(), "err!");
    assert.ok(out.closed() && err.closed());
    ch.close();
  } finally {
    await p.cleanup();
  }
});

Deno.test("run: signals are sent as SIGNAL frames; ERROR maps to the distinct status", async () => {
  const p = await pair();
  try {
    const ch = new GuestChannel(p.host);
    const done = startRun(ch);
    await guestHello(p.guest);
    await ch.sendSignal(15);
    const [sig] = await readFrames(p.guest, 1);
    assert.equal(sig.type, MsgType.SIGNAL);
    assert.deepEqual(decodeJson(sig.payload), { signo: 15 });
    await p.guest.write(
      encodeJsonFrame(MsgType.ERROR, 0, { kind: "dhcp_timeout", message: "no offer" }),
    );
    assert.deepEqual(await done, { code: 122, error: "guest init: dhcp_timeout: no offer" });
    ch.close();
  } finally {
    await p.cleanup();
  }
});

Deno.test("run: the stream ending before EXIT is a 125 channel error; a wrong version too", async () => {
  const p = await pair();
  try {
    const ch = new GuestChannel(p.host);
    const done = startRun(ch);
    p.guest.close();
    const r = await done;
    assert.equal(r.code, 125);
    assert.match(r.error ?? "", /closed before the workload exited/);
    assert.equal(ch.guestEnded, false);
    ch.close();
  } finally {
    await p.cleanup();
  }
  const q = await pair();
  try {
    const ch = new GuestChannel(q.host);
    const done = startRun(ch);
    await q.guest.write(encodeJsonFrame(MsgType.HELLO, 0, { version: 999 }));
    const r = await done;
    assert.equal(r.code, 125);
    assert.match(r.error ?? "", /protocol version 999/);
    ch.close();
  } finally {
    await q.cleanup();
  }
});

/** Starts a session on a fresh pair, answers HELLO, and reads CONFIG + the init's STDIN_EOF. */
async function session(opts: { outputLimit?: number } = {}) {
  const p = await pair();
  const ch = new GuestChannel(p.host, opts);
  const out = collector();
  const err = collector();
  const done = startRun(ch, { stdout: out.stream, stderr: err.stream });
  await p.guest.write(encodeJsonFrame(MsgType.HELLO, 0, { version: GUEST_PROTOCOL_VERSION }));
  const first = await readFrames(p.guest, 2);
  assert.deepEqual(first.map((f) => f.type), [MsgType.CONFIG, MsgType.STDIN_EOF]);
  return { p, ch, out, err, done };
}

const text = (s: string) => new TextEncoder().encode(s);
const EXEC_PROC = { args: ["cat"], env: ["PATH=/bin"], cwd: "/", uid: 0, gid: 0, terminal: false };

Deno.test("exec: own process id, stdio routed per process, stdin with EOF, signal, resize, exit", async () => {
  const { p, ch, out, done } = await session();
  try {
    const xo = collector();
    const xe = collector();
    const execP = ch.exec(EXEC_PROC, {
      stdin: ReadableStream.from([text("to-exec")]),
      stdout: xo.stream,
      stderr: xe.stream,
    });
    const [exec] = await readFrames(p.guest, 1);
    assert.equal(exec.type, MsgType.EXEC);
    assert.ok(exec.proc > 0);
    assert.deepEqual(decodeJson(exec.payload), EXEC_PROC);
    const id = exec.proc;
    // Output may come before STARTED; it is kept for the process.
    await p.guest.write(encodeFrame(MsgType.STDOUT, id, text("x-early ")));
    await p.guest.write(encodeJsonFrame(MsgType.STARTED, id, { pid: 42 }));
    const proc = await execP;
    assert.equal(proc.pid, 42);
    const stdin = await readFrames(p.guest, 2);
    assert.deepEqual(stdin.map((f) => [f.type, f.proc]), [
      [MsgType.STDIN, id],
      [MsgType.STDIN_EOF, id],
    ]);
    assert.equal(new TextDecoder().decode(stdin[0].payload), "to-exec");
    await proc.signal(10);
    await proc.resize!(100, 40);
    const [sig, rs] = await readFrames(p.guest, 2);
    assert.deepEqual([sig.type, sig.proc, decodeJson(sig.payload)], [MsgType.SIGNAL, id, {
      signo: 10,
    }]);
    assert.deepEqual([rs.type, rs.proc, decodeJson(rs.payload)], [MsgType.RESIZE, id, {
      cols: 100,
      rows: 40,
    }]);
    await assert.rejects(proc.signal(0), /signal 0: expected a signal number 1-64/);
    await p.guest.write(encodeFrame(MsgType.STDOUT, 0, text("init-out")));
    await p.guest.write(encodeFrame(MsgType.STDOUT, id, text("x-out")));
    await p.guest.write(encodeFrame(MsgType.STDERR, id, text("x-err")));
    await p.guest.write(encodeJsonFrame(MsgType.EXIT, id, { code: 4 }));
    assert.deepEqual(await proc.exited, { code: 4 });
    assert.equal(xo.text(), "x-early x-out");
    assert.equal(xe.text(), "x-err");
    assert.ok(xo.closed() && xe.closed(), "the exec's writers are closed at its exit");
    assert.equal(out.closed(), false, "the init's writer stays open");
    // A second exec gets a different id; its supplementary groups travel with it.
    const second = ch.exec({ ...EXEC_PROC, additionalGids: [1234, 5] }, {
      stdout: collector().stream,
      stderr: collector().stream,
    });
    const [exec2] = await readFrames(p.guest, 1);
    assert.notEqual(exec2.proc, id);
    assert.deepEqual(decodeJson(exec2.payload), { ...EXEC_PROC, additionalGids: [1234, 5] });
    await p.guest.write(encodeJsonFrame(MsgType.STARTED, exec2.proc, { pid: 43 }));
    await second;
    await p.guest.write(encodeJsonFrame(MsgType.EXIT, 0, { code: 0 }));
    assert.deepEqual(await done, { code: 0 });
    assert.equal(out.text(), "init-out");
    // Still running when the workload ended: 137 with an error.
    const r2 = await (await second).exited;
    assert.equal(r2.code, 137);
    assert.match(r2.error ?? "", /before process \d+ did/);
    await assert.rejects(
      ch.exec(EXEC_PROC, { stdout: collector().stream, stderr: collector().stream }),
      /the guest is not running/,
    );
    ch.close();
  } finally {
    await p.cleanup();
  }
});

Deno.test("exec: a failed start rejects with the guest's status and message; writers closed", async () => {
  const { p, ch, done } = await session();
  try {
    const xo = collector();
    const xe = collector();
    const execP = ch.exec({ ...EXEC_PROC, args: ["/bin/nope"] }, {
      stdout: xo.stream,
      stderr: xe.stream,
    });
    const [exec] = await readFrames(p.guest, 1);
    await p.guest.write(
      encodeJsonFrame(MsgType.ERROR, exec.proc, {
        kind: "exec",
        message: 'exec: "/bin/nope": no such file or directory',
        code: 127,
      }),
    );
    await p.guest.write(encodeJsonFrame(MsgType.EXIT, exec.proc, { code: 127 }));
    await assert.rejects(execP, (e: Error & { code?: number }) => {
      assert.equal(e.name, "GuestExecError");
      assert.equal(e.code, 127);
      assert.match(e.message, /could not start the process: exec: "\/bin\/nope": no such file/);
      return true;
    });
    assert.ok(xo.closed() && xe.closed());
    await assert.rejects(
      ch.exec({ ...EXEC_PROC, args: [] }, {
        stdout: collector().stream,
        stderr: collector().stream,
      }),
      /process\.args: expected at least one argument/,
    );
    // The session goes on: the workload's exit still ends it.
    await p.guest.write(encodeJsonFrame(MsgType.EXIT, 0, { code: 9 }));
    assert.deepEqual(await done, { code: 9 });
    ch.close();
  } finally {
    await p.cleanup();
  }
});

Deno.test("exec: a consumer that never reads does not stall the init; its queue is bounded", async () => {
  const { p, ch, out, done } = await session({ outputLimit: 64 * 1024 });
  try {
    let release!: () => void;
    const blocked = new Promise<void>((r) => (release = r));
    let got = 0;
    const stuck = new WritableStream<Uint8Array>({
      async write(c) {
        await blocked; // a reader that does not read until released
        got += c.length;
      },
    }, { highWaterMark: 1 });
    const xe = collector();
    const execP = ch.exec(EXEC_PROC, { stdout: stuck, stderr: xe.stream });
    const [exec] = await readFrames(p.guest, 1);
    await p.guest.write(encodeJsonFrame(MsgType.STARTED, exec.proc, { pid: 7 }));
    const proc = await execP;
    await readFrames(p.guest, 1); // its STDIN_EOF
    const chunk = new Uint8Array(16 * 1024).fill(0x61);
    for (let i = 0; i < 32; i++) await p.guest.write(encodeFrame(MsgType.STDOUT, exec.proc, chunk));
    await p.guest.write(encodeFrame(MsgType.STDOUT, 0, text("init still flows")));
    await p.guest.write(encodeJsonFrame(MsgType.EXIT, exec.proc, { code: 0 }));
    await p.guest.write(encodeJsonFrame(MsgType.EXIT, 0, { code: 0 }));
    assert.deepEqual(await done, { code: 0 }, "the init's session ends while the exec is stuck");
    assert.equal(out.text(), "init still flows");
    const dropped = proc.dropped();
    assert.ok(dropped >= 32 * 16 * 1024 - 64 * 1024 - 16 * 1024, `dropped ${dropped}`);
    release();
    assert.deepEqual(await proc.exited, { code: 0 });
    assert.equal(got + dropped, 32 * 16 * 1024, "every byte is either delivered or counted");
    assert.match(xe.text(), /nerdbox: \d+ bytes of output were dropped/);
    ch.close();
  } finally {
    await p.cleanup();
  }
});

Deno.test("exec: a request made before HELLO waits for CONFIG; one after the stream ended fails", async () => {
  const p = await pair();
  try {
    const ch = new GuestChannel(p.host);
    const early = ch.exec(EXEC_PROC, { stdout: collector().stream, stderr: collector().stream });
    const done = startRun(ch);
    await p.guest.write(encodeJsonFrame(MsgType.HELLO, 0, { version: GUEST_PROTOCOL_VERSION }));
    const frames = await readFrames(p.guest, 3);
    assert.equal(frames[0].type, MsgType.CONFIG, "CONFIG stays the first host→guest frame");
    assert.deepEqual(
      frames.map((f) => f.type).sort(),
      [
        MsgType.CONFIG,
        MsgType.STDIN_EOF,
        MsgType.EXEC,
      ].sort(),
    );
    p.guest.close();
    const r = await done;
    assert.equal(r.code, 125);
    await assert.rejects(early, /the VM ended before process \d+ started/);
    ch.close();
  } finally {
    await p.cleanup();
  }
});

Deno.test("guestErrorExit: unknown kinds give 125; control characters are escaped", () => {
  for (const kind of ["constructor", "toString", "__proto__", "bogus"]) {
    assert.equal(guestErrorExit({ kind: kind as "config", message: "m" }).code, 125, kind);
  }
  assert.equal(guestErrorExit({ kind: "rootfs", message: "m" }).code, 124);
  assert.equal(guestErrorExit({ kind: "exec", message: "m", code: 126 }).code, 126);
  const r = guestErrorExit({ kind: "exec", message: "no\u001b]0;x\u0007\r\nfile\u009b" });
  assert.equal(r.error, "guest init: exec: no\\x1b]0;x\\x07\\x0d\\x0afile\\x9b");
});

Deno.test("query: stats and listening answered by REPLY; an error reply rejects; EXIT carries oomKilled", async () => {
  const p = await pair();
  try {
    const ch = new GuestChannel(p.host);
    const out = collector();
    const err = collector();
    const done = startRun(ch, { stdout: out.stream, stderr: err.stream });
    await guestHello(p.guest);
    const stats = ch.stats("web");
    const listening = ch.listening();
    const bad = ch.stats("nosuch");
    const q = await readFrames(p.guest, 3);
    assert.deepEqual(q.map((f) => f.type), [MsgType.QUERY, MsgType.QUERY, MsgType.QUERY]);
    assert.deepEqual(decodeJson(q[0].payload), { kind: "stats", container: "web" });
    assert.deepEqual(decodeJson(q[1].payload), { kind: "listening" });
    assert.equal(new Set(q.map((f) => f.proc)).size, 3, "each query has its own id");
    // Answered out of order: each reply settles the query with its id.
    await p.guest.write(encodeJsonFrame(MsgType.REPLY, q[1].proc, { listening: [8080, 0, 99999] }));
    await p.guest.write(encodeJsonFrame(MsgType.REPLY, q[2].proc, { error: "no cgroup\x1b[2J" }));
    const s = { flat: { "cpu.stat": { usage_usec: 5 } }, single: { "memory.current": 4096 } };
    await p.guest.write(encodeJsonFrame(MsgType.REPLY, q[0].proc, { stats: s }));
    assert.deepEqual(await stats, s);
    assert.deepEqual(await listening, [8080], "ports outside 1-65535 are dropped");
    await assert.rejects(
      bad,
      (e: Error) => e.message.includes("no cgroup") && !e.message.includes("\x1b"),
    );
    // A query still pending when the VM ends rejects.
    const pending = ch.stats();
    await readFrames(p.guest, 1);
    await p.guest.write(encodeJsonFrame(MsgType.EXIT, 0, { code: 137, oomKilled: true }));
    assert.deepEqual(await done, { code: 137, oomKilled: true });
    await assert.rejects(pending, /the VM ended/);
    await assert.rejects(ch.stats(), /not running/);
    ch.close();
  } finally {
    await p.cleanup();
  }
});

Deno.test("query: update and pids carry their payloads; a guest reason becomes GuestQueryError.reason", async () => {
  const p = await pair();
  try {
    const ch = new GuestChannel(p.host);
    const done = startRun(ch);
    await guestHello(p.guest);
    const updated = ch.update({ memory: { limit: 1 << 26 } }, "web");
    const pids = ch.pids("web");
    const missing = ch.update({ pids: { limit: 5 } }, "nosuch");
    const q = await readFrames(p.guest, 3);
    assert.deepEqual(decodeJson(q[0].payload), {
      kind: "update",
      container: "web",
      resources: { memory: { limit: 1 << 26 } },
    });
    assert.deepEqual(decodeJson(q[1].payload), { kind: "pids", container: "web" });
    await p.guest.write(encodeJsonFrame(MsgType.REPLY, q[0].proc, { updated: true }));
    await p.guest.write(encodeJsonFrame(MsgType.REPLY, q[1].proc, { pids: [12, 0, 40, -1] }));
    await p.guest.write(
      encodeJsonFrame(MsgType.REPLY, q[2].proc, {
        error: "no container nosuch",
        reason: "not_found",
      }),
    );
    await updated;
    assert.deepEqual(await pids, [12, 40], "only positive integers are pids");
    await assert.rejects(
      missing,
      (e: unknown) =>
        e instanceof GuestQueryError && e.reason === "not_found" && /nosuch/.test(e.message),
    );
    // An unknown reason from the guest is a plain failure.
    const odd = ch.pids();
    const [o] = await readFrames(p.guest, 1);
    assert.deepEqual(decodeJson(o.payload), { kind: "pids", container: "workload" });
    await p.guest.write(encodeJsonFrame(MsgType.REPLY, o.proc, { error: "x", reason: "bogus" }));
    await assert.rejects(
      odd,
      (e: unknown) => e instanceof GuestQueryError && e.reason === "failed",
    );
    await p.guest.write(encodeJsonFrame(MsgType.EXIT, 0, { code: 0 }));
    assert.deepEqual(await done, { code: 0 });
    await assert.rejects(
      ch.pids(),
      (e: unknown) => e instanceof GuestQueryError && e.reason === "not_running",
    );
    ch.close();
  } finally {
    await p.cleanup();
  }
});
