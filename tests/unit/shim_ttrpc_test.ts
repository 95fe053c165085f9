/**
 * The ttrpc server and client over real UNIX sockets: concurrent and out-of-order calls, serialised
 * writes, even stream ids, oversize messages (refused early, connection still usable), unknown
 * service/method, and the exact bytes containerd observed.
 */
import { deepEqual, equal, ok, rejects } from "node:assert/strict";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { RequestSchema, ResponseSchema } from "../../lib/shim/proto/gen/ttrpc/ttrpc_pb.ts";
import { Code, TtrpcClient, TtrpcError, TtrpcServer } from "../../lib/shim/ttrpc.ts";
import {
  encodeMessage,
  HEADER_SIZE,
  MAX_PAYLOAD,
  MessageReader,
  MessageType,
} from "../../lib/shim/ttrpc_frame.ts";

const SVC = "nerdbox.test.v1.Echo";
const enc = new TextEncoder();
const dec = new TextDecoder();
const hex = (b: Uint8Array) => [...b].map((x) => x.toString(16).padStart(2, "0")).join("");

async function withServer(
  fn: (path: string, server: TtrpcServer) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "nerdbox-shim-ttrpc-" });
  const path = `${dir}/s.sock`;
  const server = new TtrpcServer();
  // Echo: payload "<delayMs>:<text>" → "<text>" after the delay.
  server.register(SVC, "Echo", async (payload) => {
    const s = dec.decode(payload);
    const i = s.indexOf(":");
    await new Promise((r) => setTimeout(r, Number(s.slice(0, i))));
    return enc.encode(s.slice(i + 1));
  });
  server.register(SVC, "Big", (payload) => Promise.resolve(payload.slice().reverse()));
  server.register(SVC, "Fail", () => {
    throw new TtrpcError(Code.NOT_FOUND, "nothing here");
  });
  server.register(SVC, "Empty", () => Promise.resolve(new Uint8Array(0)));
  const listener = Deno.listen({ transport: "unix", path });
  const serving = server.serve(listener);
  try {
    await fn(path, server);
  } finally {
    server.close();
    await serving;
    await Deno.remove(dir, { recursive: true });
  }
}

function request(service: string, method: string, payload: Uint8Array): Uint8Array {
  return toBinary(RequestSchema, create(RequestSchema, { service, method, payload }));
}

/** Sends raw bytes and reads `n` response messages. */
async function raw(path: string, bytes: Uint8Array[], n: number) {
  const conn = await Deno.connect({ transport: "unix", path });
  try {
    for (const b of bytes) {
      let off = 0;
      while (off < b.length) off += await conn.write(b.subarray(off));
    }
    const reader = new MessageReader(conn);
    const out = [];
    for (let i = 0; i < n; i++) {
      const m = await reader.next();
      if (!m || m.kind !== "message") throw new Error("no response");
      out.push(m);
    }
    return out;
  } finally {
    conn.close();
  }
}

Deno.test("concurrent calls are answered out of order, each on its own stream", async () => {
  await withServer(async (path) => {
    const client = await TtrpcClient.connect(path);
    try {
      const order: string[] = [];
      const calls = [300, 10, 150, 0, 60].map((ms, i) =>
        client.call(SVC, "Echo", enc.encode(`${ms}:call${i}`)).then((r) => {
          order.push(dec.decode(r));
          return dec.decode(r);
        })
      );
      deepEqual(await Promise.all(calls), ["call0", "call1", "call2", "call3", "call4"]);
      deepEqual(order, ["call3", "call1", "call4", "call2", "call0"]);
    } finally {
      client.close();
    }
  });
});

Deno.test("many large concurrent replies arrive intact (writes are serialised)", async () => {
  await withServer(async (path) => {
    const client = await TtrpcClient.connect(path);
    try {
      const payloads = Array.from({ length: 40 }, (_, i) => {
        const p = new Uint8Array(200_000 + i);
        for (let j = 0; j < p.length; j++) p[j] = (j * 7 + i) & 0xff;
        return p;
      });
      const replies = await Promise.all(payloads.map((p) => client.call(SVC, "Big", p)));
      replies.forEach((r, i) => deepEqual(r, payloads[i].slice().reverse()));
    } finally {
      client.close();
    }
  });
});

Deno.test("client stream ids are odd and increase by two", async () => {
  await withServer(async (path) => {
    // A fake peer that records the ids the real client uses.
    const dir = await Deno.makeTempDir({ prefix: "nerdbox-shim-ttrpc-" });
    const fakePath = `${dir}/f.sock`;
    const listener = Deno.listen({ transport: "unix", path: fakePath });
    const ids: number[] = [];
    const peer = (async () => {
      const conn = await listener.accept();
      const reader = new MessageReader(conn);
      for (let i = 0; i < 3; i++) {
        const m = await reader.next();
        if (!m) break;
        ids.push(m.streamId);
        const body = toBinary(ResponseSchema, create(ResponseSchema, {}));
        await conn.write(encodeMessage(m.streamId, MessageType.RESPONSE, body));
      }
      conn.close();
    })();
    const client = await TtrpcClient.connect(fakePath);
    for (let i = 0; i < 3; i++) await client.call(SVC, "Echo", enc.encode("0:x"));
    client.close();
    await peer;
    listener.close();
    await Deno.remove(dir, { recursive: true });
    deepEqual(ids, [1, 3, 5]);
    void path;
  });
});

Deno.test("an even stream id is refused with InvalidArgument on that stream", async () => {
  await withServer(async (path) => {
    const [m] = await raw(path, [
      encodeMessage(2, MessageType.REQUEST, request(SVC, "Echo", enc.encode("0:x"))),
    ], 1);
    equal(m.streamId, 2);
    const r = fromBinary(ResponseSchema, m.payload);
    equal(r.status?.code, Code.INVALID_ARGUMENT);
    equal(r.status?.message, "StreamID must be odd for client initiated streams");
  });
});

Deno.test("an oversize message is refused early and the connection stays usable", async () => {
  await withServer(async (path) => {
    const header = new Uint8Array(HEADER_SIZE);
    const view = new DataView(header.buffer);
    view.setUint32(0, MAX_PAYLOAD + 1);
    view.setUint32(4, 7);
    view.setUint8(8, MessageType.REQUEST);
    const junk = new Uint8Array(MAX_PAYLOAD + 1);
    const next = encodeMessage(9, MessageType.REQUEST, request(SVC, "Echo", enc.encode("0:ok")));
    const [a, b] = await raw(path, [header, junk, next], 2);
    equal(a.streamId, 7);
    equal(fromBinary(ResponseSchema, a.payload).status?.code, Code.RESOURCE_EXHAUSTED);
    equal(b.streamId, 9);
    const rb = fromBinary(ResponseSchema, b.payload);
    equal(rb.status, undefined);
    equal(dec.decode(rb.payload), "ok");
  });
});

Deno.test("the encoder refuses payloads above 4 MiB", () => {
  try {
    encodeMessage(1, MessageType.REQUEST, new Uint8Array(MAX_PAYLOAD + 1));
    ok(false, "expected a throw");
  } catch (e) {
    ok(e instanceof TtrpcError);
    equal(e.code, Code.RESOURCE_EXHAUSTED);
  }
});

Deno.test("unknown service and method answer Unimplemented (12)", async () => {
  await withServer(async (path) => {
    const client = await TtrpcClient.connect(path);
    try {
      await rejects(client.call("no.such.Service", "X", new Uint8Array()), (e) => {
        ok(e instanceof TtrpcError);
        equal(e.code, 12);
        equal(e.message, "service no.such.Service");
        return true;
      });
      await rejects(client.call(SVC, "Nope", new Uint8Array()), (e) => {
        ok(e instanceof TtrpcError);
        equal(e.code, 12);
        equal(e.message, "method Nope");
        return true;
      });
      await rejects(client.call(SVC, "Fail", new Uint8Array()), (e) => {
        ok(e instanceof TtrpcError);
        equal(e.code, Code.NOT_FOUND);
        equal(e.message, "nothing here");
        return true;
      });
    } finally {
      client.close();
    }
  });
});

Deno.test("wire bytes match what containerd exchanges", async () => {
  // An empty success reply: no status, no payload → zero-length body (observed `00000000 <id> 02 00`).
  await withServer(async (path) => {
    const [m] = await raw(path, [
      encodeMessage(5, MessageType.REQUEST, request(SVC, "Empty", new Uint8Array())),
    ], 1);
    equal(m.payload.length, 0);
    equal(m.type, MessageType.RESPONSE);
    equal(m.flags, 0);
  });
  // A CreateTaskResponse{pid 24737} reply on stream 1 (observed from runc's shim).
  const body = toBinary(
    ResponseSchema,
    create(ResponseSchema, { payload: new Uint8Array([0x08, 0xa1, 0xc1, 0x01]) }),
  );
  equal(hex(encodeMessage(1, MessageType.RESPONSE, body)), "00000006000000010200120408a1c101");
  // The error reply for an unknown method (observed `0a0f 080c 120b "method Nope"`).
  const err = toBinary(
    ResponseSchema,
    create(ResponseSchema, { status: { code: 12, message: "method Nope" } }),
  );
  equal(hex(err), "0a0f080c120b" + hex(enc.encode("method Nope")));
});

Deno.test("a deadline (timeout_nano) aborts the handler's signal; client times out", async () => {
  const dir = await Deno.makeTempDir({ prefix: "nerdbox-shim-ttrpc-" });
  const path = `${dir}/s.sock`;
  const server = new TtrpcServer();
  let aborted = Promise.withResolvers<boolean>();
  server.register(SVC, "Hang", (_p, ctx) =>
    new Promise((_, reject) => {
      ctx.signal.addEventListener("abort", () => {
        aborted.resolve(true);
        reject(new TtrpcError(Code.DEADLINE_EXCEEDED, "gave up"));
      });
    }));
  const listener = Deno.listen({ transport: "unix", path });
  const serving = server.serve(listener);
  const client = await TtrpcClient.connect(path);
  try {
    await rejects(client.call(SVC, "Hang", new Uint8Array(), { timeoutMs: 100 }), (e) => {
      ok(e instanceof TtrpcError);
      equal(e.code, Code.DEADLINE_EXCEEDED);
      return true;
    });
    equal(await aborted.promise, true);
    aborted = Promise.withResolvers<boolean>();
  } finally {
    client.close();
    server.close();
    await serving;
    await Deno.remove(dir, { recursive: true });
  }
});
