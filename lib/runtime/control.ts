/**
 * The supervisor's control socket (`<sandbox dir>/ctl.sock`): how `start`, `kill` and `exec` reach
 * the process holding the VM. A connection opens with one JSON request line. `start` and `kill`
 * get one JSON reply line. `exec` switches to frames both ways: [kind u8][length u32 BE][payload];
 * client→supervisor: stdin data (kind 0, empty = end of input); supervisor→client: stdout (1),
 * stderr (2), and last the exit (3, JSON `{code, error?}`).
 */
import type { ProcessSpec } from "../spec/types.ts";

/** A request on the control socket. */
export type ControlRequest =
  | { op: "start" }
  | { op: "kill"; signal: number; all: boolean }
  | { op: "exec"; process: ProcessSpec };

/** The reply to `start` / `kill`. */
export interface ControlReply {
  ok: boolean;
  error?: string;
}

/** Frame kinds. */
export const FRAME = { stdin: 0, stdout: 1, stderr: 2, exit: 3 } as const;

/** Encodes one frame. */
export function encodeFrame(kind: number, payload: Uint8Array): Uint8Array {
  const out = new Uint8Array(5 + payload.length);
  out[0] = kind;
  new DataView(out.buffer).setUint32(1, payload.length);
  out.set(payload, 5);
  return out;
}

/** Largest frame accepted (1 MiB). */
const MAX_FRAME = 1 << 20;

/** Buffered reads from a connection: lines, then frames. */
export class ConnReader {
  #buf = new Uint8Array(0);
  #conn: Deno.Conn;

  /** Wraps `conn`. */
  constructor(conn: Deno.Conn) {
    this.#conn = conn;
  }

  async #fill(): Promise<boolean> {
    const chunk = new Uint8Array(64 * 1024);
    const n = await this.#conn.read(chunk);
    if (n === null) return false;
    const next = new Uint8Array(this.#buf.length + n);
    next.set(this.#buf);
    next.set(chunk.subarray(0, n), this.#buf.length);
    this.#buf = next;
    return true;
  }

  /** The next `\n`-terminated line (without it), or undefined at end of stream. */
  async line(): Promise<string | undefined> {
    while (true) {
      const i = this.#buf.indexOf(10);
      if (i >= 0) {
        const text = new TextDecoder().decode(this.#buf.subarray(0, i));
        this.#buf = this.#buf.slice(i + 1);
        return text;
      }
      if (this.#buf.length > MAX_FRAME) throw new Error("control request line too long");
      if (!(await this.#fill())) return undefined;
    }
  }

  /** The next frame, or undefined at end of stream. */
  async frame(): Promise<{ kind: number; payload: Uint8Array } | undefined> {
    while (this.#buf.length < 5) if (!(await this.#fill())) return undefined;
    const len = new DataView(this.#buf.buffer, this.#buf.byteOffset).getUint32(1);
    if (len > MAX_FRAME) throw new Error(`control frame of ${len} bytes: at most ${MAX_FRAME}`);
    while (this.#buf.length < 5 + len) if (!(await this.#fill())) return undefined;
    const kind = this.#buf[0];
    const payload = this.#buf.slice(5, 5 + len);
    this.#buf = this.#buf.slice(5 + len);
    return { kind, payload };
  }
}

/** Writes all of `data`. */
export async function writeAll(conn: Deno.Conn, data: Uint8Array): Promise<void> {
  let off = 0;
  while (off < data.length) off += await conn.write(data.subarray(off));
}

/** Connects to a supervisor; a clear error when it is not listening (gone). */
export async function connectControl(path: string, id: string): Promise<Deno.Conn> {
  try {
    return await Deno.connect({ transport: "unix", path });
  } catch (e) {
    throw new Error(
      `container ${JSON.stringify(id)}: its supervisor does not answer on ${path} ` +
        `(${(e as Error).message})`,
    );
  }
}

/** Sends a start/kill request and returns the reply. */
export async function request(
  path: string,
  id: string,
  req: ControlRequest,
): Promise<ControlReply> {
  const conn = await connectControl(path, id);
  try {
    await writeAll(conn, new TextEncoder().encode(JSON.stringify(req) + "\n"));
    const line = await new ConnReader(conn).line();
    if (line === undefined) {
      return { ok: false, error: `container ${JSON.stringify(id)}: the supervisor hung up` };
    }
    return JSON.parse(line) as ControlReply;
  } finally {
    conn.close();
  }
}
