/**
 * ttrpc message framing (containerd/ttrpc v1.1 wire format): a 10-byte header — payload length
 * (u32 BE), stream id (u32 BE), message type (u8), flags (u8) — then at most 4 MiB of payload.
 */

/** Bytes in a ttrpc message header. */
export const HEADER_SIZE = 10;
/** Largest payload ttrpc accepts (4 MiB); bigger messages are refused with ResourceExhausted. */
export const MAX_PAYLOAD = 4 << 20;

/** ttrpc message types. */
export const MessageType = { REQUEST: 1, RESPONSE: 2, DATA: 3 } as const;

/** gRPC status codes as ttrpc uses them. */
export const Code = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
} as const;

/** An error carrying a gRPC status code; handlers throw it, clients receive it. */
export class TtrpcError extends Error {
  /** The gRPC status code. */
  readonly code: number;
  /** Builds the error from a code and a human message. */
  constructor(code: number, message: string) {
    super(message);
    this.name = "TtrpcError";
    this.code = code;
  }
}

/** One decoded message, or a refused oversize one (payload discarded, stream id kept). */
export type Message =
  | { kind: "message"; streamId: number; type: number; flags: number; payload: Uint8Array }
  | { kind: "oversize"; streamId: number; type: number; length: number };

/** Encodes a header followed by the payload. */
export function encodeMessage(
  streamId: number,
  type: number,
  payload: Uint8Array,
  flags = 0,
): Uint8Array {
  if (payload.length > MAX_PAYLOAD) {
    throw new TtrpcError(
      Code.RESOURCE_EXHAUSTED,
      `message length ${payload.length} exceeds maximum message size of ${MAX_PAYLOAD}`,
    );
  }
  const out = new Uint8Array(HEADER_SIZE + payload.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, payload.length);
  view.setUint32(4, streamId);
  view.setUint8(8, type);
  view.setUint8(9, flags);
  out.set(payload, HEADER_SIZE);
  return out;
}

/** Reads ttrpc messages from a byte stream; oversize payloads are skipped without buffering. */
export class MessageReader {
  #reader: { read(p: Uint8Array): Promise<number | null> };
  #buf = new Uint8Array(64 * 1024);
  #start = 0;
  #end = 0;

  /** Wraps anything with Deno's `read(p)` contract (a Deno.Conn). */
  constructor(reader: { read(p: Uint8Array): Promise<number | null> }) {
    this.#reader = reader;
  }

  /** The next message, or null at a clean end of stream. Throws on a truncated message. */
  async next(): Promise<Message | null> {
    if (!(await this.#fill(HEADER_SIZE, true))) return null;
    const view = new DataView(this.#buf.buffer, this.#start, HEADER_SIZE);
    const length = view.getUint32(0);
    const streamId = view.getUint32(4);
    const type = view.getUint8(8);
    const flags = view.getUint8(9);
    this.#start += HEADER_SIZE;
    if (length > MAX_PAYLOAD) {
      await this.#discard(length);
      return { kind: "oversize", streamId, type, length };
    }
    if (this.#buf.length < length) this.#grow(length);
    await this.#fill(length, false);
    const payload = this.#buf.slice(this.#start, this.#start + length);
    this.#start += length;
    return { kind: "message", streamId, type, flags, payload };
  }

  #grow(n: number): void {
    const next = new Uint8Array(Math.max(n, this.#buf.length * 2));
    next.set(this.#buf.subarray(this.#start, this.#end));
    this.#end -= this.#start;
    this.#start = 0;
    this.#buf = next;
  }

  /** Ensures n buffered bytes; false on EOF before any byte when `eofOk`. */
  async #fill(n: number, eofOk: boolean): Promise<boolean> {
    if (this.#end - this.#start >= n) return true;
    if (this.#buf.length - this.#start < n) {
      if (this.#buf.length < n) this.#grow(n);
      else {
        this.#buf.copyWithin(0, this.#start, this.#end);
        this.#end -= this.#start;
        this.#start = 0;
      }
    }
    while (this.#end - this.#start < n) {
      const got = await this.#reader.read(this.#buf.subarray(this.#end));
      if (got === null) {
        if (eofOk && this.#end === this.#start) return false;
        throw new Error(`ttrpc: connection closed inside a message`);
      }
      this.#end += got;
    }
    return true;
  }

  async #discard(n: number): Promise<void> {
    let left = n;
    while (left > 0) {
      if (this.#end === this.#start) {
        this.#start = this.#end = 0;
        const got = await this.#reader.read(this.#buf);
        if (got === null) throw new Error(`ttrpc: connection closed inside a message`);
        this.#end = got;
      }
      const take = Math.min(left, this.#end - this.#start);
      this.#start += take;
      left -= take;
    }
  }
}

/** Serialises writes to one connection: each message is written whole, in call order. */
export class SerialWriter {
  #conn: { write(p: Uint8Array): Promise<number> };
  #tail: Promise<void> = Promise.resolve();

  /** Wraps anything with Deno's `write(p)` contract. */
  constructor(conn: { write(p: Uint8Array): Promise<number> }) {
    this.#conn = conn;
  }

  /** Queues one message; resolves once it is fully written. */
  write(bytes: Uint8Array): Promise<void> {
    const run = this.#tail.then(async () => {
      let off = 0;
      while (off < bytes.length) off += await this.#conn.write(bytes.subarray(off));
    });
    this.#tail = run.catch(() => {});
    return run;
  }
}
