/**
 * glibc calls Deno lacks in the guest: mount, chroot, sockets (netlink, packet), reboot, waitid,
 * ptys, dup2, over the shared binding in ffi/libc.ts. Every wrapper throws an Errno naming the call
 * on failure.
 */

import { cstr, errno, libc, strerror as libcStrerror } from "../ffi/libc.ts";

/** The shared libc binding; the guest calls it once before chroot so the library is found. */
export { libc };

/** errno values the guest reacts to. */
export const E = {
  EPERM: 1,
  ENOENT: 2,
  EINTR: 4,
  EAGAIN: 11,
  EACCES: 13,
  EBUSY: 16,
  EEXIST: 17,
  ENODEV: 19,
  ECHILD: 10,
} as const;

/** A failed libc call: names the call, its argument and errno. */
export class Errno extends Error {
  /** Creates the error for `call` (with `what` describing the arguments) and `errno`. */
  constructor(readonly call: string, readonly errno: number, what = "") {
    super(`${call}(${what}): ${strerror(errno)} (errno ${errno})`);
    this.name = "Errno";
  }
}

function strerror(code: number): string {
  try {
    return libcStrerror(code);
  } catch {
    return `errno ${code}`;
  }
}

function check(rc: number | bigint, call: string, what = ""): number {
  const n = Number(rc);
  if (n < 0) throw new Errno(call, errno(), what);
  return n;
}

/** mount(2) flags. */
export const MS = {
  RDONLY: 1,
  NOSUID: 2,
  NODEV: 4,
  NOEXEC: 8,
  REMOUNT: 32,
  BIND: 4096,
  REC: 16384,
  PRIVATE: 1 << 18,
} as const;

/** mount(2); `data` is the comma-separated option string. */
export function mount(
  source: string,
  target: string,
  fstype: string,
  flags: number,
  data = "",
): void {
  const rc = libc().mount(cstr(source), cstr(target), cstr(fstype), BigInt(flags), cstr(data));
  check(rc, "mount", `${source}, ${target}, ${fstype}, ${flags}, "${data}"`);
}

/** umount2(2) with MNT_DETACH. */
export function umountLazy(target: string): void {
  check(libc().umount2(cstr(target), 2), "umount2", target);
}

/** chroot(2) then chdir("/"). */
export function chroot(dir: string): void {
  check(libc().chroot(cstr(dir)), "chroot", dir);
  check(libc().chdir(cstr("/")), "chdir", "/");
}

/** sethostname(2). */
export function sethostname(name: string): void {
  const b = new TextEncoder().encode(name);
  check(libc().sethostname(b, BigInt(b.length)), "sethostname", name);
}

/** mknod(2) of a character device. */
export function mknodChar(path: string, major: number, minor: number, perm = 0o600): void {
  // glibc's makedev encoding.
  const dev = (BigInt(major & 0xfff) << 8n) | (BigInt(major & ~0xfff) << 32n) |
    BigInt(minor & 0xff) | (BigInt(minor & ~0xff) << 12n);
  check(libc().mknod(cstr(path), 0o020000 | perm, dev), "mknod", path);
}

/** open(2) flags. */
export const O = { RDONLY: 0, WRONLY: 1, RDWR: 2, NOCTTY: 0o400, CLOEXEC: 0o2000000 } as const;

/** open(2); returns the fd. */
export function open(path: string, flags: number, mode = 0): number {
  return check(libc().open(cstr(path), flags, mode), "open", path);
}

/** close(2), errors ignored. */
export function close(fd: number): void {
  libc().close(fd);
}

/** Blocking read(2) run off the main thread; 0 at EOF; throws on error. */
export async function readAsync(fd: number, buf: Uint8Array<ArrayBuffer>): Promise<number> {
  const n = Number(await libc().read_nb(fd, buf, BigInt(buf.length)));
  if (n < 0) throw new Errno("read", -1, `fd ${fd}`);
  return n;
}

/** Writes all of `data` with write(2) off the main thread. */
export async function writeAllAsync(fd: number, data: Uint8Array<ArrayBuffer>): Promise<void> {
  let off = 0;
  while (off < data.length) {
    const chunk = off === 0 ? data : data.slice(off);
    const n = Number(await libc().write_nb(fd, chunk, BigInt(chunk.length)));
    if (n < 0) throw new Errno("write", -1, `fd ${fd}`);
    off += n;
  }
}

/** Synchronous write(2) of all bytes. */
export function writeAllSync(fd: number, data: Uint8Array<ArrayBuffer>): void {
  let off = 0;
  while (off < data.length) {
    const chunk = off === 0 ? data : data.slice(off);
    off += check(libc().write(fd, chunk, BigInt(chunk.length)), "write", `fd ${fd}`);
  }
}

/** socket(2); returns the fd. */
export function socket(domain: number, type: number, protocol: number): number {
  return check(libc().socket(domain, type, protocol), "socket", `${domain}, ${type}, ${protocol}`);
}

/** bind(2) to a raw sockaddr. */
export function bind(fd: number, addr: Uint8Array<ArrayBuffer>): void {
  check(libc().bind(fd, addr, addr.length), "bind", `fd ${fd}`);
}

/** setsockopt(2) with a raw value. */
export function setsockopt(
  fd: number,
  level: number,
  name: number,
  value: Uint8Array<ArrayBuffer>,
): void {
  check(libc().setsockopt(fd, level, name, value, value.length), "setsockopt", `${level}/${name}`);
}

/** setsockopt(2) with an int value. */
export function setsockoptInt(fd: number, level: number, name: number, value: number): void {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setInt32(0, value, true);
  setsockopt(fd, level, name, b);
}

/** SO_RCVTIMEO in milliseconds. */
export function setRecvTimeout(fd: number, ms: number): void {
  const tv = new Uint8Array(16);
  const v = new DataView(tv.buffer);
  v.setBigInt64(0, BigInt(Math.floor(ms / 1000)), true);
  v.setBigInt64(8, BigInt((ms % 1000) * 1000), true);
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, tv);
}

/** Socket constants used by the guest. */
export const SOL_SOCKET = 1;
/** SO_RCVTIMEO option. */
export const SO_RCVTIMEO = 20;
/** SO_BINDTODEVICE option. */
export const SO_BINDTODEVICE = 25;

/** sendto(2) with an optional raw destination sockaddr. */
export function sendto(
  fd: number,
  data: Uint8Array<ArrayBuffer>,
  dest?: Uint8Array<ArrayBuffer>,
): number {
  const addr = dest ?? new Uint8Array(0);
  return check(
    libc().sendto(fd, data, BigInt(data.length), 0, addr, addr.length),
    "sendto",
    `fd ${fd}`,
  );
}

/** Synchronous recv(2); returns bytes or -errno (EAGAIN on timeout). */
export function recv(fd: number, buf: Uint8Array<ArrayBuffer>): number {
  const n = Number(libc().recvfrom(fd, buf, BigInt(buf.length), 0, null, null));
  return n < 0 ? -errno() : n;
}

/** recvfrom(2) off the main thread; fills `from` (sockaddr) and returns bytes, or -1 (timeout/error). */
export async function recvfromAsync(
  fd: number,
  buf: Uint8Array<ArrayBuffer>,
  from: Uint8Array<ArrayBuffer>,
): Promise<number> {
  const len = new Uint8Array(4);
  new DataView(len.buffer).setUint32(0, from.length, true);
  return Number(await libc().recvfrom_nb(fd, buf, BigInt(buf.length), 0, from, len));
}

/** ioctl(2) with an integer argument. */
export function ioctlInt(fd: number, req: number, arg: number): void {
  check(libc().ioctl(fd, BigInt(req), BigInt(arg)), "ioctl", `0x${req.toString(16)}`);
}

/** ioctl(2) with a buffer argument. */
export function ioctlBuf(fd: number, req: number, arg: Uint8Array<ArrayBuffer>): void {
  check(libc().ioctl_ptr(fd, BigInt(req), arg), "ioctl", `0x${req.toString(16)}`);
}

/** reboot(2) with LINUX_REBOOT_CMD_POWER_OFF. Returns only on failure. */
export function powerOff(): void {
  check(libc().reboot(0x4321fedc), "reboot", "POWER_OFF");
}

/** kill(2). */
export function kill(pid: number, signo: number): void {
  check(libc().kill(pid, signo), "kill", `${pid}, ${signo}`);
}

/** Peeks at one exited child without reaping it (waitid P_ALL, WNOWAIT); 0 when none. */
export function peekExitedChild(): number {
  const info = new Uint8Array(128);
  const WEXITED = 4, WNOHANG = 1, WNOWAIT = 0x01000000;
  const rc = libc().waitid(0, 0, info, WEXITED | WNOHANG | WNOWAIT);
  if (rc < 0) return 0; // ECHILD: no children
  return new DataView(info.buffer).getInt32(16, true);
}

/** waitpid(pid, WNOHANG); returns the pid reaped or 0. */
export function reap(pid: number): number {
  const status = new Uint8Array(4);
  return Math.max(0, libc().waitpid(pid, status, 1));
}

/** prctl(PR_SET_CHILD_SUBREAPER, 1): orphans re-parent to us when we are not PID 1. */
export function setChildSubreaper(): void {
  check(libc().prctl(36, 1n, 0n, 0n, 0n), "prctl", "PR_SET_CHILD_SUBREAPER");
}

/** getpid(2) (Deno.pid is the same; kept for clarity in PID-1 checks). */
export function getpid(): number {
  return libc().getpid();
}

/** dup(2). */
export function dup(fd: number): number {
  return check(libc().dup(fd), "dup", `${fd}`);
}

/** fcntl(F_DUPFD_CLOEXEC): a close-on-exec duplicate numbered 3 or above. */
export function dupCloexec(fd: number): number {
  return check(libc().fcntl(fd, 1030, 3), "fcntl", `F_DUPFD_CLOEXEC ${fd}`);
}

/** Sets FD_CLOEXEC on every open fd from 3 up, so workloads do not inherit init's fds. */
export function cloexecAbove2(): void {
  for (const e of Deno.readDirSync("/proc/self/fd")) {
    const fd = Number(e.name);
    if (fd > 2) libc().fcntl(fd, 2, /* F_SETFD */ 1 /* FD_CLOEXEC */);
  }
}

/** dup2(2). */
export function dup2(from: number, to: number): void {
  check(libc().dup2(from, to), "dup2", `${from}, ${to}`);
}

/** Opens a new pty pair; returns the master fd and the slave path. */
export function openPty(): { master: number; slavePath: string } {
  const c = libc();
  const master = check(c.posix_openpt(O.RDWR | O.NOCTTY | O.CLOEXEC), "posix_openpt");
  try {
    check(c.grantpt(master), "grantpt");
    check(c.unlockpt(master), "unlockpt");
    const name = new Uint8Array(128);
    const rc = c.ptsname_r(master, name, BigInt(name.length));
    if (rc !== 0) throw new Errno("ptsname_r", rc);
    const end = name.indexOf(0);
    return { master, slavePath: new TextDecoder().decode(name.subarray(0, end)) };
  } catch (err) {
    close(master);
    throw err;
  }
}

/** TIOCSWINSZ on a pty fd. */
export function setWinsize(fd: number, cols: number, rows: number): void {
  const ws = new Uint8Array(8);
  const v = new DataView(ws.buffer);
  v.setUint16(0, rows, true);
  v.setUint16(2, cols, true);
  ioctlBuf(fd, 0x5414, ws);
}
