/**
 * libc calls Deno lacks for network namespaces: open/setns/close, fstatfs (nsfs magic) and the
 * NS_GET_NSTYPE ioctl. Loaded lazily; needs `--allow-ffi` and root (CAP_SYS_ADMIN) for setns.
 */
import { cstr, errno, libc, strerror } from "./libc.ts";

/** `CLONE_NEWNET`: the nstype argument of setns(2) for network namespaces. */
export const CLONE_NEWNET = 0x40000000;
/** statfs f_type of the nsfs filesystem that /proc/<pid>/ns/* and bind-mounted netns live on. */
export const NSFS_MAGIC = 0x6e736673;

const O_RDONLY = 0;
const O_NOFOLLOW = 0o400000;
const O_CLOEXEC = 0o2000000;
/** ioctl(2) request `_IO(0xb7, 0x3)`: which kind of namespace an nsfs fd refers to. */
const NS_GET_NSTYPE = 0xb703n;

/** An OS error from a libc call, with errno and its text. */
export class LibcError extends Error {
  /** The errno value. */
  readonly errno: number;
  constructor(call: string, errno: number) {
    super(`${call}: ${strerror(errno)} (errno ${errno})`);
    this.name = "LibcError";
    this.errno = errno;
  }
}

/** Opens `path` read-only with O_CLOEXEC (and O_NOFOLLOW unless `follow`); returns the fd. */
export function openNs(path: string, follow: boolean): number {
  const flags = O_RDONLY | O_CLOEXEC | (follow ? 0 : O_NOFOLLOW);
  const fd = libc().open(cstr(path), flags, 0);
  if (fd < 0) throw new LibcError(`open ${JSON.stringify(path)}`, errno());
  return fd;
}

/** Closes a file descriptor (errors ignored: there is nothing useful to do about them). */
export function closeFd(fd: number): void {
  libc().close(fd);
}

/** Moves the calling thread into the namespace behind `fd` (nstype CLONE_NEWNET). */
export function setnsNet(fd: number): void {
  if (libc().setns(fd, CLONE_NEWNET) !== 0) throw new LibcError("setns", errno());
}

/** statfs f_type of the filesystem `fd` lives on. */
export function fsMagic(fd: number): number {
  const buf = new Uint8Array(120); // struct statfs on x86_64 is 120 bytes; f_type is the first long
  if (libc().fstatfs(fd, buf) !== 0) throw new LibcError("fstatfs", errno());
  return Number(new DataView(buf.buffer).getBigInt64(0, true));
}

/** CLONE_NEW* type of the namespace an nsfs fd refers to. */
export function nsType(fd: number): number {
  const r = libc().ioctl(fd, NS_GET_NSTYPE, 0n);
  if (r < 0) throw new LibcError("ioctl(NS_GET_NSTYPE)", errno());
  return r;
}
