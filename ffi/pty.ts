/**
 * Pseudo-terminals and fd passing, which Deno lacks: open a pty pair (posix_openpt, grantpt,
 * unlockpt, ptsname_r) and send an fd over a UNIX socket with SCM_RIGHTS (sendmsg) — what an OCI
 * runtime does with `--console-socket`: the pty master goes to the caller (conmon, containerd).
 */
const O_RDWR = 0o2;
const O_NOCTTY = 0o400;
const O_CLOEXEC = 0o2000000;
const AF_UNIX = 1;
const SOCK_STREAM = 1;
const SOL_SOCKET = 1;
const SCM_RIGHTS = 1;

import { errno, libc, ptrValue } from "./libc.ts";

/** A pty pair: the master fd (ours to send or close) and the slave's path. */
export interface Pty {
  master: number;
  slavePath: string;
}

/** Opens a new pty; the slave is unlocked and can be opened by path. */
export function openPty(): Pty {
  const c = libc();
  const master = c.posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (master < 0) throw new Error(`posix_openpt failed: errno ${errno()}`);
  const name = new Uint8Array(128);
  if (
    c.grantpt(master) !== 0 || c.unlockpt(master) !== 0 || c.ptsname_r(master, name, 128n) !== 0
  ) {
    const e = errno();
    c.close(master);
    throw new Error(`cannot set up the pty: errno ${e}`);
  }
  const slavePath = new TextDecoder().decode(name.subarray(0, name.indexOf(0)));
  return { master, slavePath };
}

/** Closes an fd this module returned. */
export function closeFd(fd: number): void {
  libc().close(fd);
}

/** Connects to the UNIX stream socket `path` and sends `fd` with SCM_RIGHTS (payload: its name). */
export function sendFd(path: string, fd: number, name = "/dev/ptmx"): void {
  const c = libc();
  const bytes = new TextEncoder().encode(path);
  if (bytes.length >= 108 || bytes.includes(0)) {
    throw new Error(`--console-socket ${JSON.stringify(path)}: expected a path under 108 bytes`);
  }
  const addr = new Uint8Array(110);
  new DataView(addr.buffer).setUint16(0, AF_UNIX, true);
  addr.set(bytes, 2);
  const sock = c.socket(AF_UNIX, SOCK_STREAM | O_CLOEXEC, 0);
  if (sock < 0) throw new Error(`socket failed: errno ${errno()}`);
  try {
    if (c.connect(sock, addr, 2 + bytes.length + 1) !== 0) {
      throw new Error(`cannot connect to --console-socket ${path}: errno ${errno()}`);
    }
    const data = new TextEncoder().encode(name);
    const iov = new Uint8Array(16);
    const iv = new DataView(iov.buffer);
    iv.setBigUint64(0, ptrValue(data), true);
    iv.setBigUint64(8, BigInt(data.length), true);
    const control = new Uint8Array(24); // CMSG_SPACE(sizeof(int))
    const cv = new DataView(control.buffer);
    cv.setBigUint64(0, 20n, true); // CMSG_LEN(sizeof(int))
    cv.setInt32(8, SOL_SOCKET, true);
    cv.setInt32(12, SCM_RIGHTS, true);
    cv.setInt32(16, fd, true);
    const msg = new Uint8Array(56);
    const mv = new DataView(msg.buffer);
    mv.setBigUint64(16, ptrValue(iov), true);
    mv.setBigUint64(24, 1n, true);
    mv.setBigUint64(32, ptrValue(control), true);
    mv.setBigUint64(40, BigInt(control.length), true);
    const n = c.sendmsg(sock, msg, 0);
    if (Number(n) < 0) {
      throw new Error(`sendmsg to --console-socket ${path} failed: errno ${errno()}`);
    }
  } finally {
    c.close(sock);
  }
}
