/**
 * A ttrpc server and client over UNIX stream sockets (containerd/ttrpc v1.1 semantics): unary
 * requests on odd client stream ids, handled concurrently and answered out of order, replies
 * written one at a time; unknown service/method → Unimplemented, oversize → ResourceExhausted.
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import {
  type Request,
  RequestSchema,
  type Response,
  ResponseSchema,
} from "./proto/gen/ttrpc/ttrpc_pb.ts";
import {
  Code,
  encodeMessage,
  MAX_PAYLOAD,
  MessageReader,
  MessageType,
  SerialWriter,
  TtrpcError,
} from "./ttrpc_frame.ts";

export { Code, TtrpcError } from "./ttrpc_frame.ts";

/** What a handler learns about the call besides its payload. */
export interface CallContext {
  service: string;
  method: string;
  /** Request metadata (key → values). */
  metadata: Map<string, string[]>;
  /** Aborted when the client's deadline (timeout_nano) passes or its connection closes. */
  signal: AbortSignal;
  /** The connection the call came in on. */
  conn: ServerConnection;
}

/** A unary method: request payload in, response payload out; throw TtrpcError for a status. */
export type Handler = (payload: Uint8Array, ctx: CallContext) => Promise<Uint8Array>;

/** One accepted client connection. */
export interface ServerConnection {
  /** Distinct per connection within one server. */
  readonly id: number;
  /** Resolves when the connection is gone. */
  readonly closed: Promise<void>;
}

function statusResponse(code: number, message: string): Uint8Array {
  return toBinary(ResponseSchema, create(ResponseSchema, { status: { code, message } }));
}

function errorOf(err: unknown): { code: number; message: string } {
  if (err instanceof TtrpcError) return { code: err.code, message: err.message };
  return { code: Code.UNKNOWN, message: err instanceof Error ? err.message : String(err) };
}

/** Serves registered unary methods on any number of listeners and connections. */
export class TtrpcServer {
  #methods = new Map<string, Handler>();
  #conns = new Set<Deno.Conn>();
  #listeners = new Set<Deno.Listener>();
  #nextConnId = 1;
  /** Called with every caught handler or connection error (for logging). */
  onError: (err: unknown) => void = () => {};

  /** Registers one method under `service` (e.g. `containerd.task.v2.Task`) and `method`. */
  register(service: string, method: string, handler: Handler): void {
    this.#methods.set(`${service}/${method}`, handler);
  }

  /** Accepts connections until the listener closes. */
  async serve(listener: Deno.Listener): Promise<void> {
    this.#listeners.add(listener);
    try {
      for await (const conn of listener) this.handle(conn);
    } catch (err) {
      if (!(err instanceof Deno.errors.BadResource)) throw err;
    } finally {
      this.#listeners.delete(listener);
    }
  }

  /** Serves one connection in the background; the returned promise resolves when it closes. */
  handle(conn: Deno.Conn): Promise<void> {
    this.#conns.add(conn);
    let markClosed!: () => void;
    const closed = new Promise<void>((r) => markClosed = r);
    const info: ServerConnection = { id: this.#nextConnId++, closed };
    const done = this.#serveConn(conn, info).finally(() => {
      this.#conns.delete(conn);
      try {
        conn.close();
      } catch { /* already closed */ }
      markClosed();
    });
    return done;
  }

  /** Stops accepting and closes every connection. */
  close(): void {
    for (const l of this.#listeners) {
      try {
        l.close();
      } catch { /* closed */ }
    }
    for (const c of this.#conns) {
      try {
        c.close();
      } catch { /* closed */ }
    }
  }

  async #serveConn(conn: Deno.Conn, info: ServerConnection): Promise<void> {
    const reader = new MessageReader(conn);
    const writer = new SerialWriter(conn);
    const connAbort = new AbortController();
    const inflight = new Set<Promise<void>>();
    const reply = (streamId: number, body: Uint8Array) =>
      writer.write(encodeMessage(streamId, MessageType.RESPONSE, body)).catch(() => {});
    try {
      while (true) {
        let msg;
        try {
          msg = await reader.next();
        } catch (err) {
          if (!isConnGone(err)) this.onError(err);
          return;
        }
        if (msg === null) return;
        if (msg.type !== MessageType.REQUEST) continue; // unknown types are ignored (future compat)
        if (msg.kind === "oversize") {
          await reply(
            msg.streamId,
            statusResponse(
              Code.RESOURCE_EXHAUSTED,
              `message length ${msg.length} exceed maximum message size of ${MAX_PAYLOAD}`,
            ),
          );
          continue;
        }
        if (msg.streamId % 2 !== 1) {
          await reply(
            msg.streamId,
            statusResponse(
              Code.INVALID_ARGUMENT,
              "StreamID must be odd for client initiated streams",
            ),
          );
          continue;
        }
        const p = this.#dispatch(msg.streamId, msg.payload, info, connAbort.signal)
          .then((body) => reply(msg.streamId, body));
        inflight.add(p);
        p.finally(() => inflight.delete(p));
      }
    } finally {
      connAbort.abort(new TtrpcError(Code.CANCELLED, "connection closed"));
    }
  }

  async #dispatch(
    _streamId: number,
    payload: Uint8Array,
    conn: ServerConnection,
    connSignal: AbortSignal,
  ): Promise<Uint8Array> {
    let req: Request;
    try {
      req = fromBinary(RequestSchema, payload);
    } catch (err) {
      return statusResponse(Code.INVALID_ARGUMENT, `bad ttrpc request: ${errorOf(err).message}`);
    }
    const handler = this.#methods.get(`${req.service}/${req.method}`);
    if (!handler) {
      const known = [...this.#methods.keys()].some((k) => k.startsWith(`${req.service}/`));
      return statusResponse(
        Code.UNIMPLEMENTED,
        known ? `method ${req.method}` : `service ${req.service}`,
      );
    }
    const metadata = new Map<string, string[]>();
    for (const kv of req.metadata) {
      metadata.set(kv.key, [...(metadata.get(kv.key) ?? []), kv.value]);
    }
    const signals = [connSignal];
    if (req.timeoutNano > 0n) {
      signals.push(AbortSignal.timeout(Number(req.timeoutNano / 1_000_000n) || 1));
    }
    const ctx: CallContext = {
      service: req.service,
      method: req.method,
      metadata,
      signal: AbortSignal.any(signals),
      conn,
    };
    try {
      const out = await handler(req.payload, ctx);
      if (out.length > MAX_PAYLOAD) {
        throw new TtrpcError(Code.RESOURCE_EXHAUSTED, `response of ${out.length} bytes too large`);
      }
      return toBinary(ResponseSchema, create(ResponseSchema, { payload: out }));
    } catch (err) {
      const e = errorOf(err);
      if (!(err instanceof TtrpcError)) this.onError(err);
      return statusResponse(e.code, e.message);
    }
  }
}

function isConnGone(err: unknown): boolean {
  return err instanceof Deno.errors.BadResource || err instanceof Deno.errors.ConnectionReset ||
    err instanceof Deno.errors.BrokenPipe || err instanceof Deno.errors.Interrupted ||
    (err instanceof Error && err.message.includes("connection closed inside"));
}

/** Options for one client call. */
export interface CallOptions {
  /** Sent as timeout_nano and enforced locally. */
  timeoutMs?: number;
  metadata?: Record<string, string>;
}

/** A ttrpc client on one connection; calls may overlap. */
export class TtrpcClient {
  #conn: Deno.Conn;
  #writer: SerialWriter;
  #nextId = 1;
  #pending = new Map<number, { resolve: (r: Response) => void; reject: (e: Error) => void }>();
  #closed = false;
  /** Resolves when the connection is gone. */
  readonly done: Promise<void>;

  private constructor(conn: Deno.Conn) {
    this.#conn = conn;
    this.#writer = new SerialWriter(conn);
    this.done = this.#readLoop();
  }

  /** Connects to a UNIX socket path (a `unix://` prefix is accepted). */
  static async connect(address: string): Promise<TtrpcClient> {
    const path = address.replace(/^unix:\/\//, "");
    const conn = await Deno.connect({ transport: "unix", path });
    return new TtrpcClient(conn);
  }

  /** Makes one unary call and returns the response payload; a status becomes a TtrpcError. */
  call(
    service: string,
    method: string,
    payload: Uint8Array,
    opts: CallOptions = {},
  ): Promise<Uint8Array> {
    if (this.#closed) return Promise.reject(new TtrpcError(Code.UNAVAILABLE, "ttrpc: closed"));
    const streamId = this.#nextId;
    this.#nextId += 2;
    const req = create(RequestSchema, {
      service,
      method,
      payload,
      timeoutNano: opts.timeoutMs ? BigInt(opts.timeoutMs) * 1_000_000n : 0n,
      metadata: Object.entries(opts.metadata ?? {}).map(([key, value]) => ({ key, value })),
    });
    return new Promise<Uint8Array>((resolve, reject) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      this.#pending.set(streamId, {
        resolve: (r) => {
          clearTimeout(timer);
          if (r.status && r.status.code !== Code.OK) {
            reject(new TtrpcError(r.status.code, r.status.message));
          } else resolve(r.payload);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      if (opts.timeoutMs) {
        timer = setTimeout(() => {
          this.#pending.delete(streamId);
          reject(new TtrpcError(Code.DEADLINE_EXCEEDED, `${service}/${method}: deadline exceeded`));
        }, opts.timeoutMs);
      }
      this.#writer.write(encodeMessage(streamId, MessageType.REQUEST, toBinary(RequestSchema, req)))
        .catch((err) => {
          this.#pending.get(streamId)?.reject(err);
          this.#pending.delete(streamId);
        });
    });
  }

  /** Closes the connection; pending calls fail with Unavailable. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#conn.close();
    } catch { /* closed */ }
  }

  async #readLoop(): Promise<void> {
    const reader = new MessageReader(this.#conn);
    try {
      while (true) {
        const msg = await reader.next();
        if (msg === null) break;
        if (msg.type !== MessageType.RESPONSE) continue;
        const waiter = this.#pending.get(msg.streamId);
        if (!waiter) continue;
        this.#pending.delete(msg.streamId);
        if (msg.kind === "oversize") {
          waiter.reject(new TtrpcError(Code.RESOURCE_EXHAUSTED, `response of ${msg.length} bytes`));
          continue;
        }
        try {
          waiter.resolve(fromBinary(ResponseSchema, msg.payload));
        } catch (err) {
          waiter.reject(err as Error);
        }
      }
    } catch { /* connection gone */ }
    this.#closed = true;
    for (const w of this.#pending.values()) {
      w.reject(new TtrpcError(Code.UNAVAILABLE, "ttrpc: connection closed"));
    }
    this.#pending.clear();
    try {
      this.#conn.close();
    } catch { /* closed */ }
  }
}
