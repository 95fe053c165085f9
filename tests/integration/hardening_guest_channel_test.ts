/**
 * The guest is untrusted: a FAKE GUEST PEER (a test stand-in — the real guest init runs only inside
 * a VM) speaks lib/guest_protocol.ts over a real UNIX socket to the host side, lib/vm/channel.ts
 * GuestChannel, and sends what a compromised guest could: oversized frames, unknown types, a
 * flood of STDOUT, bogus EXIT/ERROR payloads, paths and terminal escapes. The host must end with a
 * clear status, never block on buffered output, write no file and spawn no process.
 */
import { equal, match, ok } from "node:assert/strict";
import {
  encodeFrame,
  encodeJsonFrame,
  FRAME_HEADER_SIZE,
  GUEST_PROTOCOL_VERSION,
  type GuestConfig,
  MsgType,
} from "../../lib/guest_protocol.ts";
import { GuestChannel } from "../../lib/vm/channel.ts";
import { guestErrorExit } from "../../lib/vm/guest_error.ts";
import type { VmExit } from "../../lib/vm/types.ts";
import { childrenOf } from "../helpers/procs.ts";

const CONFIG: GuestConfig = {
  version: GUEST_PROTOCOL_VERSION,
  hostname: "h",
  rootfs: { kind: "virtiofs", tag: "rootfs" },
  process: { args: ["/bin/true"], env: [], cwd: "/", uid: 0, gid: 0, terminal: false },
  networks: [],
  dhcpTimeoutMs: 1000,
};

/** Children of this test process (a spawned helper would show up here). */
function children(): Promise<number[]> {
  return childrenOf(Deno.pid);
}

/** Files under dir, recursively. */
async function listing(dir: string): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(dir)) {
    out.push(e.name);
    if (e.isDirectory) {
      out.push(...(await listing(`${dir}/${e.name}`)).map((n) => `${e.name}/${n}`));
    }
  }
  return out.sort();
}

interface Session {
  /** The fake guest's end. */
  guest: Deno.UnixConn;
  /** The host's result. */
  exit: Promise<VmExit>;
  stdoutBytes: () => number;
}

/**
 * Runs GuestChannel.run on the host end of a fresh socket pair, inside a temp cwd, and hands the
 * fake guest's end to `script`; afterwards checks that the host wrote nothing and spawned nothing.
 */
async function withFakeGuest(
  opts: { blockStdout?: boolean },
  script: (s: Session) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "nbx-hard-guest-" });
  const cwd = Deno.cwd();
  const kidsBefore = await children();
  const listener = Deno.listen({ transport: "unix", path: `${dir}/ctl.sock` });
  const [host, guest] = await Promise.all([
    listener.accept(),
    Deno.connect({ transport: "unix", path: `${dir}/ctl.sock` }),
  ]);
  listener.close();
  await Deno.remove(`${dir}/ctl.sock`).catch(() => {}); // Deno may unlink it on close
  Deno.chdir(dir);
  let stdoutBytes = 0;
  let release = () => {};
  const blocked = new Promise<void>((r) => release = r);
  const stdout = new WritableStream<Uint8Array>({
    async write(c) {
      stdoutBytes += c.length;
      if (opts.blockStdout) await blocked; // a terminal nobody reads
    },
  }, { highWaterMark: 1 });
  const sink = () => new WritableStream<Uint8Array>();
  const channel = new GuestChannel(host);
  const exit = channel.run(CONFIG, { stdout, stderr: sink() });
  try {
    await script({ guest, exit, stdoutBytes: () => stdoutBytes });
  } finally {
    release();
    try {
      guest.close();
    } catch { /* closed */ }
    await exit.catch(() => {});
    channel.close();
    Deno.chdir(cwd);
    const files = await listing(dir);
    await Deno.remove(dir, { recursive: true });
    equal(files.join(","), "", "the host wrote files while talking to the guest");
    const kids = (await children()).filter((p) => !kidsBefore.includes(p));
    equal(kids.join(","), "", "the host spawned processes because of guest input");
  }
}

const hello = () => encodeJsonFrame(MsgType.HELLO, 0, { version: GUEST_PROTOCOL_VERSION });

async function send(conn: Deno.Conn, ...frames: Uint8Array[]) {
  for (const f of frames) {
    let off = 0;
    while (off < f.length) off += await conn.write(f.subarray(off));
  }
}

Deno.test("untrusted guest: an oversized frame header ends the session with a clear error", async () => {
  await withFakeGuest({}, async ({ guest, exit }) => {
    const header = new Uint8Array(FRAME_HEADER_SIZE);
    new DataView(header.buffer).setUint32(0, 0xfffffff0);
    header[4] = MsgType.STDOUT;
    await send(guest, hello(), header);
    const r = await exit;
    equal(r.code, 125);
    match(r.error ?? "", /guest channel: frame payload 4294967280 bytes exceeds 1048576/);
  });
});

Deno.test("untrusted guest: unknown types and other processes' frames are ignored", async () => {
  await withFakeGuest({}, async ({ guest, exit, stdoutBytes }) => {
    await send(
      guest,
      hello(),
      encodeFrame(0x00, 0, new Uint8Array(10)),
      encodeFrame(0x7f, 0, new Uint8Array(10)),
      encodeFrame(0xff, 0xffffffff, new Uint8Array(10)),
      encodeFrame(MsgType.CONFIG, 0, new TextEncoder().encode('{"version":1}')), // host→guest type
      encodeFrame(MsgType.STDOUT, 42, new Uint8Array(100)), // not the init process
      encodeFrame(MsgType.STARTED, 0, new TextEncoder().encode('{"pid":"../../../etc"}')),
      encodeJsonFrame(MsgType.EXIT, 0, { code: 7 }),
    );
    equal((await exit).code, 7);
    equal(stdoutBytes(), 0);
  });
});

for (
  const [what, payload] of [
    ["null", "null"],
    ["a string code", '{"code":"; rm -rf /"}'],
    ["a huge code", '{"code":1e300}'],
    ["a negative code", '{"code":-1}'],
    ["not JSON", "\u0000\u0001garbage"],
    ["an array", "[0]"],
  ] as const
) {
  Deno.test(`untrusted guest: a bogus EXIT payload (${what}) gives 125 and a clear error`, async () => {
    await withFakeGuest({}, async ({ guest, exit }) => {
      await send(guest, hello(), encodeFrame(MsgType.EXIT, 0, new TextEncoder().encode(payload)));
      const r = await exit;
      equal(r.code, 125);
      ok(r.error && r.error.length > 0);
      ok(Number.isInteger(r.code));
    });
  });
}

// A kind looked up on a plain object must not find Object.prototype's members: "constructor",
// "toString" or "hasOwnProperty" once gave a function as the exit status.
for (const kind of ["constructor", "toString", "__proto__", "hasOwnProperty", "bogus"]) {
  Deno.test(`untrusted guest: ERROR with kind ${JSON.stringify(kind)} maps to an integer status`, () => {
    const r = guestErrorExit({ kind: kind as "config", message: "x" });
    ok(Number.isInteger(r.code) && r.code >= 0 && r.code <= 255, `code is ${String(r.code)}`);
  });
}

Deno.test("untrusted guest: ERROR through the channel with a hostile kind and code", async () => {
  await withFakeGuest({}, async ({ guest, exit }) => {
    await send(
      guest,
      hello(),
      encodeJsonFrame(MsgType.ERROR, 0, { kind: "constructor", message: "m", code: 1e9 }),
    );
    const r = await exit;
    ok(Number.isInteger(r.code) && r.code >= 0 && r.code <= 255, `code is ${String(r.code)}`);
  });
});

// The guest's ERROR message is printed on the operator's terminal by `nerdbox run`: escape
// sequences in it (retitle, clear, fake prompts) must arrive escaped.
Deno.test("untrusted guest: control characters in an ERROR message do not reach the terminal", async () => {
  await withFakeGuest({}, async ({ guest, exit }) => {
    await send(
      guest,
      hello(),
      encodeJsonFrame(MsgType.ERROR, 0, {
        kind: "exec",
        message: "no such file\u001b]0;pwned\u0007\u001b[2J\r",
      }),
    );
    const r = await exit;
    equal(r.code, 127);
    ok(
      // deno-lint-ignore no-control-regex
      !/[\x00-\x08\x0b-\x1f\x7f]/.test(r.error ?? ""),
      `raw control bytes in ${JSON.stringify(r.error)}`,
    );
  });
});

Deno.test("untrusted guest: a STDOUT flood into a blocked terminal is not buffered on the host", async () => {
  await withFakeGuest({ blockStdout: true }, async ({ guest, stdoutBytes }) => {
    const chunk = encodeFrame(MsgType.STDOUT, 0, new Uint8Array(256 * 1024).fill(0x41));
    await send(guest, hello());
    // The guest tries to push 256 MiB; the host must stop reading (socket back-pressure) instead
    // of queueing it. Count what the guest managed to write within a few seconds.
    let written = 0;
    const flood = (async () => {
      for (let i = 0; i < 1024; i++) {
        await send(guest, chunk);
        written += chunk.length;
      }
    })().catch(() => {});
    const rss0 = Deno.memoryUsage().rss;
    await new Promise((r) => setTimeout(r, 3000));
    const grew = Deno.memoryUsage().rss - rss0;
    ok(written < 32 << 20, `the host accepted ${written >> 20} MiB while its stdout was blocked`);
    ok(grew < 64 << 20, `host memory grew by ${grew >> 20} MiB`);
    ok(stdoutBytes() <= 2 * 256 * 1024, `stdout got ${stdoutBytes()} bytes while blocked`);
    guest.close();
    await flood;
  });
});

Deno.test("untrusted guest: HELLO with another protocol version is refused", async () => {
  await withFakeGuest({}, async ({ guest, exit }) => {
    await send(guest, encodeJsonFrame(MsgType.HELLO, 0, { version: 99 }));
    const r = await exit;
    equal(r.code, 125);
    match(r.error ?? "", /protocol version 99/);
  });
});

Deno.test("untrusted guest: the channel closing before EXIT is a clear error, not a hang", async () => {
  await withFakeGuest({}, async ({ guest, exit }) => {
    await send(guest, hello(), encodeFrame(MsgType.STDOUT, 0, new Uint8Array(5)));
    guest.close();
    const r = await exit;
    equal(r.code, 125);
    match(
      r.error ?? "",
      /closed before the workload exited|guest channel: (Broken pipe|Connection reset)/,
    );
  });
});

Deno.test("untrusted guest: an exec'd process flooding a stalled reader neither stalls the workload nor grows the host", async () => {
  const dir = await Deno.makeTempDir({ prefix: "nbx-hard-guest-" });
  const listener = Deno.listen({ transport: "unix", path: `${dir}/ctl.sock` });
  const [host, guest] = await Promise.all([
    listener.accept(),
    Deno.connect({ transport: "unix", path: `${dir}/ctl.sock` }),
  ]);
  listener.close();
  let initOut = "";
  const initStdout = new WritableStream<Uint8Array>({
    write(c) {
      initOut += new TextDecoder().decode(c);
    },
  });
  const never = new Promise<void>(() => {});
  const stalled = new WritableStream<Uint8Array>({ write: () => never }); // nobody reads
  const channel = new GuestChannel(host);
  const exit = channel.run(CONFIG, { stdout: initStdout, stderr: new WritableStream() });
  try {
    // The fake guest: HELLO, then wait for the host's EXEC frame to learn the process id.
    await send(guest, hello());
    const execP = channel.exec(
      { args: ["/bin/yes"], env: [], cwd: "/", uid: 0, gid: 0, terminal: false },
      { stdout: stalled, stderr: new WritableStream() },
    );
    const { FrameDecoder: Decoder } = await import("../../lib/guest_protocol.ts");
    const dec = new Decoder();
    let execId = -1;
    const buf = new Uint8Array(65536);
    while (execId < 0) {
      const n = await guest.read(buf);
      if (n === null) throw new Error("the host closed the channel");
      for (const f of dec.push(buf.subarray(0, n))) if (f.type === MsgType.EXEC) execId = f.proc;
    }
    await send(guest, encodeJsonFrame(MsgType.STARTED, execId, { pid: 42 }));
    const proc = await execP;
    // 64 MiB for the stalled exec'd process, then a line for the workload.
    const chunk = encodeFrame(MsgType.STDOUT, execId, new Uint8Array(256 * 1024));
    for (let i = 0; i < 256; i++) await send(guest, chunk);
    await send(
      guest,
      encodeFrame(MsgType.STDOUT, 0, new TextEncoder().encode("workload still heard\n")),
      encodeJsonFrame(MsgType.EXIT, execId, { code: 0 }),
      encodeJsonFrame(MsgType.EXIT, 0, { code: 0 }),
    );
    equal((await exit).code, 0);
    equal(initOut, "workload still heard\n");
    // At most the 8 MiB queue bound (and the chunk being written) is held; the rest is dropped.
    const kept = (64 << 20) - proc.dropped();
    ok(kept <= (8 << 20) + (256 << 10), `${kept >> 20} MiB of a stalled reader's output was kept`);
  } finally {
    try {
      guest.close();
    } catch { /* closed */ }
    channel.close();
    await Deno.remove(dir, { recursive: true });
  }
});
