/**
 * Guest side of the control channel: the virtio-console port `nerdbox.ctl` (read and written
 * through libc on one fd, since the port can be opened only once), or a unix socket in dev mode.
 * Frames out are serialised through one queue so they never interleave.
 */
import * as c from "./libc.ts";
import {
  CHANNEL_PORT_NAME,
  encodeFrame,
  encodeJsonFrame,
  type Frame,
  FrameDecoder,
} from "../lib/guest_protocol.ts";
import { exists } from "../lib/fs.ts";

/** A byte transport under the channel. */
interface Transport {
  read(buf: Uint8Array<ArrayBuffer>): Promise<number>;
  write(data: Uint8Array<ArrayBuffer>): Promise<void>;
  close(): void;
}

/** The framed channel to the host. */
export class Channel {
  #t: Transport;
  #queue: Promise<void> = Promise.resolve();
  #broken?: Error;
  /** Where the channel leads (for messages). */
  readonly where: string;

  private constructor(t: Transport, where: string) {
    this.#t = t;
    this.where = where;
  }

  /** Connects to a unix stream socket (dev mode). */
  static async connectUnix(path: string): Promise<Channel> {
    const conn = await Deno.connect({ transport: "unix", path });
    return new Channel({
      read: async (buf) => (await conn.read(buf)) ?? 0,
      write: async (data) => {
        let off = 0;
        while (off < data.length) off += await conn.write(data.subarray(off));
      },
      close: () => {
        try {
          conn.close();
        } catch { /* already closed */ }
      },
    }, `unix:${path}`);
  }

  /** Opens the virtio-console port named `nerdbox.ctl`, waiting up to `timeoutMs` for it. */
  static async openVirtioPort(timeoutMs = 3000): Promise<Channel> {
    const path = await findVirtioPort(CHANNEL_PORT_NAME, timeoutMs);
    const fd = c.open(path, c.O.RDWR | c.O.NOCTTY | c.O.CLOEXEC);
    return new Channel({
      read: (buf) => c.readAsync(fd, buf),
      write: (data) => c.writeAllAsync(fd, data),
      close: () => c.close(fd),
    }, path);
  }

  /** Queues one frame; resolves once it is written. */
  send(type: number, proc: number, payload: Uint8Array): Promise<void> {
    return this.#enqueue(encodeFrame(type, proc, payload));
  }

  /** Queues one JSON frame. */
  sendJson(type: number, proc: number, value: unknown): Promise<void> {
    return this.#enqueue(encodeJsonFrame(type, proc, value));
  }

  #enqueue(bytes: Uint8Array): Promise<void> {
    const data = bytes as Uint8Array<ArrayBuffer>;
    const p = this.#queue.then(async () => {
      if (this.#broken) throw this.#broken;
      try {
        await this.#t.write(data);
      } catch (err) {
        this.#broken = err instanceof Error ? err : new Error(String(err));
        throw this.#broken;
      }
    });
    this.#queue = p.catch(() => {});
    return p;
  }

  /** Resolves once every queued frame is written. */
  flush(): Promise<void> {
    return this.#queue;
  }

  /** Yields frames from the host until EOF. */
  async *frames(): AsyncGenerator<Frame> {
    const dec = new FrameDecoder();
    const buf = new Uint8Array(64 * 1024);
    for (;;) {
      const n = await this.#t.read(buf);
      if (n <= 0) return;
      yield* dec.push(buf.subarray(0, n));
    }
  }

  /** Closes the transport. */
  close(): void {
    this.#t.close();
  }
}

/** Finds `/dev/vportNpM` whose sysfs name is `name`, creating the node from sysfs `dev` if missing. */
export async function findVirtioPort(name: string, timeoutMs: number): Promise<string> {
  const base = "/sys/class/virtio-ports";
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      for await (const e of Deno.readDir(base)) {
        const portName = await Deno.readTextFile(`${base}/${e.name}/name`).catch(() => "");
        if (portName.trim() !== name) continue;
        const node = `/dev/${e.name}`;
        if (!(await exists(node))) {
          const [major, minor] = (await Deno.readTextFile(`${base}/${e.name}/dev`)).trim().split(
            ":",
          )
            .map(Number);
          c.mknodChar(node, major, minor);
        }
        return node;
      }
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
    }
    if (Date.now() >= deadline) {
      throw new Error(
        `no virtio-console port named "${name}" under ${base} after ${timeoutMs} ms ` +
          `(is virtio_console loaded and the port attached?)`,
      );
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}
