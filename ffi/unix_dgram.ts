/**
 * AF_UNIX datagram sockets bound to a path (Deno's own API for them is unstable): bind, send one
 * datagram to a path, receive with the sender's path. Used for the vfkit `VFKT` handshake and by
 * datagram test peers.
 */
import { errno, libc } from "./libc.ts";
import { sockaddrUn } from "./sockets.ts";

const AF_UNIX = 1;
const SOCK_DGRAM = 2;
const SOCK_CLOEXEC = 0o2000000;

/** A bound AF_UNIX datagram socket. */
export class UnixDgram {
  readonly fd: number;
  readonly path: string;
  #closed = false;

  private constructor(fd: number, path: string) {
    this.fd = fd;
    this.path = path;
  }

  /** Binds a new datagram socket at `path` (a stale file there is removed first). */
  static bind(path: string): UnixDgram {
    const { addr, len } = sockaddrUn(path);
    try {
      Deno.removeSync(path);
    } catch {
      // not there
    }
    const c = libc();
    const fd = c.socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) throw new Error(`socket(AF_UNIX, SOCK_DGRAM) failed: errno ${errno()}`);
    if (c.bind(fd, addr as Uint8Array<ArrayBuffer>, len) !== 0) {
      const e = errno();
      c.close(fd);
      throw new Error(`bind(${path}) failed: errno ${e}`);
    }
    // 1 s receive timeout so a blocking recv returns to check for close().
    const tv = new BigInt64Array([1n, 0n]);
    c.setsockopt(fd, 1, /* SOL_SOCKET */ 20, /* SO_RCVTIMEO */ new Uint8Array(tv.buffer), 16);
    return new UnixDgram(fd, path);
  }

  /** Sends one datagram to the socket at `path`; throws with the errno on failure. */
  sendTo(path: string, data: Uint8Array): void {
    const { addr, len } = sockaddrUn(path);
    const r = libc().sendto(
      this.fd,
      data as Uint8Array<ArrayBuffer>,
      BigInt(data.length),
      0,
      addr as Uint8Array<ArrayBuffer>,
      len,
    );
    if (r < 0) throw new Error(`sendto(${path}) failed: errno ${errno()}`);
  }

  /** Receives one datagram (undefined on timeout/close) with the sender's path. */
  async recv(): Promise<{ data: Uint8Array; from: string } | undefined> {
    while (!this.#closed) {
      const buf = new Uint8Array(65536);
      const from = new Uint8Array(110);
      const fromLen = new Uint32Array([110]);
      const n = Number(
        await libc().recvfrom_nb(this.fd, buf, 65536n, 0, from, new Uint8Array(fromLen.buffer)),
      );
      if (n >= 0) {
        const len = new Uint32Array(fromLen.buffer)[0];
        const raw = from.subarray(2, Math.max(2, len));
        const nul = raw.indexOf(0);
        return {
          data: buf.slice(0, n),
          from: new TextDecoder().decode(nul < 0 ? raw : raw.subarray(0, nul)),
        };
      }
      // n < 0: timeout (SO_RCVTIMEO) or EINTR; errno is not readable here (another thread).
    }
    return undefined;
  }

  /** Closes the socket and removes its path (idempotent). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    libc().close(this.fd);
    try {
      Deno.removeSync(this.path);
    } catch {
      // gone
    }
  }
}

/**
 * The vfkit handshake as libkrun does it: from `localPath` (which QEMU binds next), send the
 * 4-byte datagram `VFKT` to the provider at `remotePath`, then release the path.
 */
export function sendVfkitHandshake(localPath: string, remotePath: string): void {
  const s = UnixDgram.bind(localPath);
  try {
    s.sendTo(remotePath, new TextEncoder().encode("VFKT"));
  } finally {
    s.close();
  }
}
