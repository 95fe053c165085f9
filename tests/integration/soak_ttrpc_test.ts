/**
 * Load on one shim ttrpc server: many connections firing State/Wait/Kill/Pids storms at the real
 * Task service (each request names its own container id, so a response delivered to the wrong
 * call is visible), interleaved with slow calls answered out of order. Every call gets exactly
 * its own answer; the server's fds and memory come back to where they were. NERDBOX_SOAK=1 runs
 * the long version.
 */
import { deepEqual, equal, ok } from "node:assert/strict";
import { create, toBinary } from "@bufbuild/protobuf";
import * as pb from "../../lib/shim/proto/gen/containerd/shim_pb.ts";
import { Code, TtrpcClient, TtrpcError, TtrpcServer } from "../../lib/shim/ttrpc.ts";
import { TASK_SERVICE } from "../../lib/shim/task_service.ts";
import { Rng } from "../fuzz/harness.ts";
import { localTaskService } from "../helpers/task_service.ts";

const SOAK = Deno.env.get("NERDBOX_SOAK") === "1";
const ECHO = "nerdbox.test.v1.Echo";
const enc = new TextEncoder();
const dec = new TextDecoder();

async function openFds(): Promise<number> {
  return (await Array.fromAsync(Deno.readDir("/proc/self/fd"))).length;
}

async function fdTargets(): Promise<string> {
  const out: Record<string, number> = {};
  for await (const e of Deno.readDir("/proc/self/fd")) {
    const t = await Deno.readLink(`/proc/self/fd/${e.name}`).catch(() => "?");
    const k = t.replace(/\[\d+\]/, "[]");
    out[k] = (out[k] ?? 0) + 1;
  }
  return JSON.stringify(out);
}

async function withServer(fn: (path: string) => Promise<void>) {
  const dir = await Deno.makeTempDir({ prefix: "nbx-soak-ttrpc-" });
  const path = `${dir}/t.sock`;
  const server = new TtrpcServer();
  const errors: unknown[] = [];
  server.onError = (e) => errors.push(e);
  localTaskService("soak", `${dir}/run`).register(server);
  // Echo: "<delayMs>:<text>" → "<text>" after the delay (answers out of order).
  server.register(ECHO, "Echo", async (payload) => {
    const s = dec.decode(payload);
    const i = s.indexOf(":");
    await new Promise((r) => setTimeout(r, Number(s.slice(0, i))));
    return enc.encode(s.slice(i + 1));
  });
  const listener = Deno.listen({ transport: "unix", path });
  const serving = server.serve(listener);
  try {
    await fn(path);
    deepEqual(errors, [], "the server logged no unexpected handler errors");
  } finally {
    server.close();
    await serving;
    await Deno.remove(dir, { recursive: true });
  }
}

type Kind = "State" | "Wait" | "Kill" | "Pids" | "Echo";

function requestFor(kind: Kind, id: string): [string, string, Uint8Array] {
  switch (kind) {
    case "State":
      return [
        TASK_SERVICE,
        kind,
        toBinary(pb.StateRequestSchema, create(pb.StateRequestSchema, { id })),
      ];
    case "Wait":
      return [
        TASK_SERVICE,
        kind,
        toBinary(pb.WaitRequestSchema, create(pb.WaitRequestSchema, { id })),
      ];
    case "Kill":
      return [
        TASK_SERVICE,
        kind,
        toBinary(pb.KillRequestSchema, create(pb.KillRequestSchema, { id, signal: 9 })),
      ];
    case "Pids":
      return [
        TASK_SERVICE,
        kind,
        toBinary(pb.PidsRequestSchema, create(pb.PidsRequestSchema, { id })),
      ];
    case "Echo":
      return [ECHO, "Echo", enc.encode(`${id.length % 7}:${id}`)];
  }
}

/** One storm: `conns` connections, `perConn` overlapping calls each; checks every answer. */
async function storm(path: string, conns: number, perConn: number, seed: number) {
  const rng = new Rng(seed);
  const clients = await Promise.all(
    Array.from({ length: conns }, () => TtrpcClient.connect(path)),
  );
  const kinds: Kind[] = ["State", "Wait", "Kill", "Pids", "Echo"];
  let answered = 0;
  try {
    await Promise.all(clients.flatMap((c, ci) =>
      Array.from({ length: perConn }, async (_, k) => {
        const id = `c${ci}-k${k}-${rng.u32().toString(36)}`;
        const kind = kinds[rng.int(kinds.length)];
        const [svc, method, payload] = requestFor(kind, id);
        try {
          const out = await c.call(svc, method, payload, { timeoutMs: 30_000 });
          equal(kind, "Echo", `${kind} of an unknown container succeeded`);
          equal(dec.decode(out), id, "an Echo answer went to another call");
        } catch (e) {
          if (!(e instanceof TtrpcError)) throw e;
          equal(e.code, Code.NOT_FOUND, `${kind} ${id}: ${e.message}`);
          ok(e.message.includes(JSON.stringify(id)), `${kind} ${id} got the answer: ${e.message}`);
        }
        answered++;
      })
    ));
  } finally {
    for (const c of clients) c.close();
    await Promise.all(clients.map((c) => c.done));
  }
  equal(answered, conns * perConn, "every call was answered");
}

Deno.test("load: State/Wait/Kill/Pids storms on one shim server: no lost or misrouted answer", async () => {
  await withServer(async (path) => {
    // warm-up, then measure fds and memory around the storms
    await storm(path, 2, 50, 1);
    const fds0 = await openFds();
    const rounds = SOAK ? 40 : 3;
    for (let i = 0; i < rounds; i++) await storm(path, 16, SOAK ? 500 : 200, 100 + i);
    // The server notices each close on its next read; give it a moment.
    let fds = await openFds();
    for (let i = 0; i < 50 && fds > fds0; i++) {
      await new Promise((r) => setTimeout(r, 100));
      fds = await openFds();
    }
    ok(fds <= fds0, `${fds - fds0} more open fds after the storms (${await fdTargets()})`);
  });
});

Deno.test("load: a slow call does not hold up the answers behind it on the same connection", async () => {
  await withServer(async (path) => {
    const c = await TtrpcClient.connect(path);
    try {
      const order: string[] = [];
      const slow = c.call(ECHO, "Echo", enc.encode("1500:slow")).then(() => order.push("slow"));
      const fast = Array.from(
        { length: 50 },
        (_, i) =>
          c.call(ECHO, "Echo", enc.encode(`0:f${i}`)).then((b) => order.push(dec.decode(b))),
      );
      await Promise.all([slow, ...fast]);
      equal(order.at(-1), "slow");
      equal(order.length, 51);
    } finally {
      c.close();
      await c.done;
    }
  });
});
