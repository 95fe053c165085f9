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
import { buildGuestConfig, GuestChannel } from "../../lib/vm/channel.ts";
import type { VmPlan } from "../../lib/vm/types.ts";

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
      socket: "/run/x.sock",
      mode: "unixstream",
      mac: "02:00:00:00:00:01",
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
    const done = ch.run(buildGuestConfig(PLAN, { kind: "virtiofs", tag: "rootfs" }), {
      stdout: collector().stream,
      stderr: collector().stream,
    });
    await p.guest.write(encodeJsonFrame(MsgType.HELLO, 0, { version: GUEST_PROTOCOL_VERSION }));
    await readFrames(p.guest, 2); // CONFIG, STDIN_EOF (no stdin given)
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
    const done = ch.run(buildGuestConfig(PLAN, { kind: "virtiofs", tag: "rootfs" }), {
      stdout: collector().stream,
      stderr: collector().stream,
    });
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
    const done = ch.run(buildGuestConfig(PLAN, { kind: "virtiofs", tag: "rootfs" }), {
      stdout: collector().stream,
      stderr: collector().stream,
    });
    await q.guest.write(encodeJsonFrame(MsgType.HELLO, 0, { version: 999 }));
    const r = await done;
    assert.equal(r.code, 125);
    assert.match(r.error ?? "", /protocol version 999/);
    ch.close();
  } finally {
    await q.cleanup();
  }
});
