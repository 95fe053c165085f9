/**
 * `probeSocket` against real sockets: Deno and libc listeners of both types, a real passt in its
 * own network namespace and a real libgvproxy instance. After each probe the provider must still
 * accept the VM's one connection, proved by an ARP exchange over it.
 */
import { deepEqual, equal, ok } from "node:assert/strict";
import { probeSocket } from "../../lib/net/probe.ts";
import { bindUnix, closeFd, SOCK_DGRAM, SOCK_SEQPACKET, SOCK_STREAM } from "../../ffi/sockets.ts";
import { arpOverStream, type Provider, startGvproxy, startPasst } from "../helpers/providers.ts";

const ROOT = new URL("../..", import.meta.url).pathname;
const GUEST_MAC = "52:54:00:12:34:56";

/** What a probe says, without the path. */
async function probe(path: string, mode: "unixgram" | "unixstream") {
  const { path: _p, mode: _m, ...rest } = await probeSocket(path, mode);
  return rest;
}

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "nbx-probe-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Connects as the VM would and gets an ARP reply from the provider's gateway. */
async function vmStillAccepted(p: Provider): Promise<string> {
  const conn = await Deno.connect({ transport: "unix", path: p.socket });
  try {
    return await arpOverStream(conn, { mac: GUEST_MAC, fromIp: p.guestIp, targetIp: p.gatewayIp });
  } finally {
    try {
      conn.close();
    } catch { /* closed by a timeout */ }
  }
}

async function waitUntil(fn: () => Promise<boolean>, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await fn())) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

Deno.test("a Deno stream listener: ok for unixstream, wrong type for unixgram, nothing queued", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/s.sock`;
    const listener = Deno.listen({ transport: "unix", path });
    try {
      deepEqual(await probe(path, "unixstream"), {
        ok: true,
        status: "ok",
        socketType: "stream",
        listening: true,
        message: "a stream socket is listening there",
      });
      deepEqual(await probe(path, "unixgram"), {
        ok: false,
        status: "wrong-type",
        socketType: "stream",
        listening: true,
        message: "it is a stream socket: use mode=unixstream",
      });
      // The probes queued no connection: the first one accepted is ours and carries our bytes.
      const accepted = listener.accept();
      const client = await Deno.connect({ transport: "unix", path });
      const server = await accepted;
      await client.write(new TextEncoder().encode("vm"));
      const buf = new Uint8Array(8);
      const n = await server.read(buf);
      equal(new TextDecoder().decode(buf.subarray(0, n ?? 0)), "vm");
      client.close();
      server.close();
    } finally {
      listener.close();
    }
  });
});

Deno.test("a datagram socket: ok for unixgram, wrong type for unixstream, no datagram sent", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/g.sock`;
    const fd = bindUnix(path, SOCK_DGRAM);
    try {
      deepEqual(await probe(path, "unixgram"), {
        ok: true,
        status: "ok",
        socketType: "dgram",
        message: "a datagram socket is bound there",
      });
      deepEqual(await probe(path, "unixstream"), {
        ok: false,
        status: "wrong-type",
        socketType: "dgram",
        message: "it is a datagram socket: use mode=unixgram",
      });
      const queued = Deno.readTextFileSync("/proc/net/unix").split("\n")
        .find((l) => l.endsWith(` ${path}`));
      ok(queued, "the datagram socket is listed in /proc/net/unix");
    } finally {
      closeFd(fd);
    }
  });
});

Deno.test("bound but not listening, stale file, seqpacket, not a socket, missing", async () => {
  await withTempDir(async (dir) => {
    const bound = bindUnix(`${dir}/bound.sock`, SOCK_STREAM);
    const seq = bindUnix(`${dir}/seq.sock`, SOCK_SEQPACKET, 1);
    const stale = bindUnix(`${dir}/stale.sock`, SOCK_DGRAM);
    closeFd(stale);
    await Deno.writeTextFile(`${dir}/file`, "x");
    try {
      deepEqual(await probe(`${dir}/bound.sock`, "unixstream"), {
        ok: false,
        status: "not-listening",
        socketType: "stream",
        listening: false,
        message: "a stream socket is bound there but not listening",
      });
      deepEqual(await probe(`${dir}/stale.sock`, "unixgram"), {
        ok: false,
        status: "not-listening",
        message: "nobody is bound to it (a socket file left behind by a provider that exited?)",
      });
      deepEqual(await probe(`${dir}/seq.sock`, "unixstream"), {
        ok: false,
        status: "wrong-type",
        socketType: "seqpacket",
        message: "it is a seqpacket socket: neither mode fits (providers must use SOCK_STREAM " +
          "or SOCK_DGRAM)",
      });
      deepEqual(await probe(`${dir}/file`, "unixgram"), {
        ok: false,
        status: "not-a-socket",
        message: "it is a regular file, not a UNIX socket",
      });
      deepEqual(await probe(dir, "unixgram"), {
        ok: false,
        status: "not-a-socket",
        message: "it is a directory, not a UNIX socket",
      });
      deepEqual(await probe(`${dir}/none.sock`, "unixstream"), {
        ok: false,
        status: "missing",
        message: "no such file: is the provider running, and is the path right?",
      });
    } finally {
      closeFd(bound);
      closeFd(seq);
    }
  });
});

Deno.test("passt (one client, own netns): probes leave its one connection to the VM", async () => {
  const passt = await startPasst();
  try {
    const ns = await probe(passt.socket, "unixstream");
    deepEqual([ns.ok, ns.status, ns.socketType], [true, "ok", "stream"]);
    deepEqual(await probe(passt.socket, "unixgram"), {
      ok: false,
      status: "wrong-type",
      socketType: "stream",
      message: "it is a stream socket: use mode=unixstream",
    });
    await probe(passt.socket, "unixstream");
    // passt -1 serves exactly one client; it still answers ARP as the gateway.
    ok(/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/.test(await vmStillAccepted(passt)));
    // Control: that client used it up; passt is gone and the probe says so.
    await waitUntil(async () => (await probe(passt.socket, "unixstream")).status !== "ok");
    const after = await probe(passt.socket, "unixstream");
    ok(["not-listening", "missing"].includes(after.status), JSON.stringify(after));
  } finally {
    await passt.close();
  }
});

Deno.test("libgvproxy (one VM connection): probes leave its connection to the VM", async () => {
  const gv = await startGvproxy();
  try {
    deepEqual(await probe(gv.socket, "unixstream"), {
      ok: true,
      status: "ok",
      socketType: "stream",
      listening: true,
      message: "a stream socket is listening there",
    });
    deepEqual(
      (await probe(gv.socket, "unixgram")).message,
      "it is a stream socket: use mode=unixstream",
    );
    // The CLI end to end, in another process.
    const cli = await new Deno.Command(`${ROOT}bin/nerdbox`, {
      args: [
        "inspect",
        "--json",
        "--probe",
        `socket=${gv.socket},mode=unixstream,mac=${GUEST_MAC}`,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    equal(cli.code, 0, new TextDecoder().decode(cli.stderr));
    equal(JSON.parse(new TextDecoder().decode(cli.stdout)).networks[0].probe.status, "ok");
    equal(await vmStillAccepted(gv), "5a:94:ef:e4:0c:dd");
    // Control: gvproxy takes one VM connection and then stops listening.
    const again = await probe(gv.socket, "unixstream");
    ok(again.status !== "ok", JSON.stringify(again));
  } finally {
    await gv.close();
  }
});
