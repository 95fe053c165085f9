/**
 * libc socket calls Deno has no API for: a UNIX socket of any type, connect() to a path, and the
 * errno it failed with. Used to probe providers' sockets without talking to them.
 */
import { errno, libc } from "./libc.ts";

/** AF_UNIX. */
export const AF_UNIX = 1;
/** SOCK_STREAM. */
export const SOCK_STREAM = 1;
/** SOCK_DGRAM. */
export const SOCK_DGRAM = 2;
/** SOCK_SEQPACKET. */
export const SOCK_SEQPACKET = 5;
/** SOCK_NONBLOCK (x86-64 and most Linux ABIs). */
export const SOCK_NONBLOCK = 0o4000;
/** SOCK_CLOEXEC. */
export const SOCK_CLOEXEC = 0o2000000;

/** errno values probe results depend on (Linux). */
export const Errno = {
  ENOENT: 2,
  EAGAIN: 11,
  EACCES: 13,
  ENOTDIR: 20,
  EPROTOTYPE: 91,
  ECONNREFUSED: 111,
  EINPROGRESS: 115,
} as const;

const SUN_PATH_SIZE = 108;

/** A `struct sockaddr_un` for `path` and its length; throws if the path does not fit. */
export function sockaddrUn(path: string): { addr: Uint8Array; len: number } {
  const bytes = new TextEncoder().encode(path);
  if (bytes.length >= SUN_PATH_SIZE || bytes.includes(0)) {
    throw new RangeError(`socket path does not fit sun_path (${SUN_PATH_SIZE - 1} bytes, no NUL)`);
  }
  const addr = new Uint8Array(2 + SUN_PATH_SIZE);
  new DataView(addr.buffer).setUint16(0, AF_UNIX, true);
  addr.set(bytes, 2);
  return { addr, len: 2 + bytes.length + 1 };
}

/**
 * Creates an AF_UNIX socket of `type`, connects it to `path` and closes it again. Returns 0 when
 * connect succeeded, else the errno. Nothing is sent. `type` may include SOCK_NONBLOCK.
 */
export function connectOnce(path: string, type: number): number {
  const { addr, len } = sockaddrUn(path);
  const c = libc();
  const fd = c.socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
  if (fd < 0) throw new Error(`socket(AF_UNIX, ${type}) failed: errno ${errno()}`);
  try {
    const r = c.connect(fd, addr, len);
    return r === 0 ? 0 : errno();
  } finally {
    c.close(fd);
  }
}

/**
 * Creates an AF_UNIX socket of `type` bound to `path`, listening when `backlog` is given; returns
 * its fd (close it with closeFd). For tests and tools that need a socket Deno cannot make.
 */
export function bindUnix(path: string, type: number, backlog?: number): number {
  const { addr, len } = sockaddrUn(path);
  const c = libc();
  const fd = c.socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
  if (fd < 0) throw new Error(`socket(AF_UNIX, ${type}) failed: errno ${errno()}`);
  if (c.bind(fd, addr, len) !== 0) {
    const e = errno();
    c.close(fd);
    throw new Error(`bind(${path}) failed: errno ${e}`);
  }
  if (backlog !== undefined && c.listen(fd, backlog) !== 0) {
    const e = errno();
    c.close(fd);
    throw new Error(`listen(${path}) failed: errno ${e}`);
  }
  return fd;
}

/** Closes an fd from bindUnix. */
export function closeFd(fd: number): void {
  libc().close(fd);
}
