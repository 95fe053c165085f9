/**
 * The one glibc binding, shared by the host's ffi/ modules and the guest init (guest/libc.ts wraps
 * it; the guest image ships this file beside lib/guest_protocol.ts). Each symbol is bound on first
 * use: Deno compiles a trampoline per bound symbol, which is slow under TCG, and the guest's boot
 * path uses about half of them. Imports nothing.
 */

const LIBC_PATHS = ["libc.so.6", "/lib/x86_64-linux-gnu/libc.so.6", "/lib64/libc.so.6"];

/** Every libc symbol nerdbox calls (`*_nb` variants run off the main thread). */
export const LIBC_SYMBOLS = {
  __errno_location: { parameters: [], result: "pointer" },
  strerror: { parameters: ["i32"], result: "pointer" },
  mount: { parameters: ["buffer", "buffer", "buffer", "u64", "buffer"], result: "i32" },
  umount2: { parameters: ["buffer", "i32"], result: "i32" },
  chroot: { parameters: ["buffer"], result: "i32" },
  chdir: { parameters: ["buffer"], result: "i32" },
  sethostname: { parameters: ["buffer", "usize"], result: "i32" },
  mknod: { parameters: ["buffer", "u32", "u64"], result: "i32" },
  open: { parameters: ["buffer", "i32", "u32"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
  read: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  read_nb: {
    name: "read",
    parameters: ["i32", "buffer", "usize"],
    result: "isize",
    nonblocking: true,
  },
  write: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  write_nb: {
    name: "write",
    parameters: ["i32", "buffer", "usize"],
    result: "isize",
    nonblocking: true,
  },
  socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
  bind: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  connect: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  socketpair: { parameters: ["i32", "i32", "i32", "buffer"], result: "i32" },
  listen: { parameters: ["i32", "i32"], result: "i32" },
  setsockopt: { parameters: ["i32", "i32", "i32", "buffer", "u32"], result: "i32" },
  sendto: { parameters: ["i32", "buffer", "usize", "i32", "buffer", "u32"], result: "isize" },
  sendmsg: { parameters: ["i32", "buffer", "i32"], result: "isize" },
  recvfrom: { parameters: ["i32", "buffer", "usize", "i32", "buffer", "buffer"], result: "isize" },
  recvfrom_nb: {
    name: "recvfrom",
    parameters: ["i32", "buffer", "usize", "i32", "buffer", "buffer"],
    result: "isize",
    nonblocking: true,
  },
  ioctl: { parameters: ["i32", "u64", "u64"], result: "i32" },
  ioctl_ptr: { name: "ioctl", parameters: ["i32", "u64", "buffer"], result: "i32" },
  reboot: { parameters: ["i32"], result: "i32" },
  kill: { parameters: ["i32", "i32"], result: "i32" },
  waitid: { parameters: ["i32", "u32", "buffer", "i32"], result: "i32" },
  waitpid: { parameters: ["i32", "buffer", "i32"], result: "i32" },
  prctl: { parameters: ["i32", "u64", "u64", "u64", "u64"], result: "i32" },
  getpid: { parameters: [], result: "i32" },
  getppid: { parameters: [], result: "i32" },
  dup: { parameters: ["i32"], result: "i32" },
  fcntl: { parameters: ["i32", "i32", "i32"], result: "i32" },
  dup2: { parameters: ["i32", "i32"], result: "i32" },
  posix_openpt: { parameters: ["i32"], result: "i32" },
  grantpt: { parameters: ["i32"], result: "i32" },
  unlockpt: { parameters: ["i32"], result: "i32" },
  ptsname_r: { parameters: ["i32", "buffer", "usize"], result: "i32" },
  setns: { parameters: ["i32", "i32"], result: "i32" },
  fstatfs: { parameters: ["i32", "buffer"], result: "i32" },
  syscall: { parameters: ["i64", "i64", "buffer", "i64"], result: "i64" },
} as const satisfies Deno.ForeignLibraryInterface;

/** The bound libc symbols. */
export type Libc = Deno.DynamicLibrary<typeof LIBC_SYMBOLS>["symbols"];
type Name = keyof typeof LIBC_SYMBOLS;
let lib: Libc | undefined;
const keep: Deno.DynamicLibrary<Deno.ForeignLibraryInterface>[] = [];

/**
 * libc, each symbol bound on first use. The library is found once (the guest calls this before
 * chroot); later binds reuse the already-loaded object by its path (no file access).
 */
export function libc(): Libc {
  if (lib) return lib;
  let path: string | undefined;
  let last: unknown;
  for (const candidate of LIBC_PATHS) {
    try {
      keep.push(Deno.dlopen(candidate, { getpid: LIBC_SYMBOLS.getpid }));
      path = candidate;
      break;
    } catch (err) {
      last = err;
    }
  }
  if (!path) throw new Error(`cannot load libc (tried ${LIBC_PATHS.join(", ")}): ${last}`);
  const found = path;
  const out = {} as Record<Name, unknown>;
  for (const name of Object.keys(LIBC_SYMBOLS) as Name[]) {
    let fn: unknown;
    Object.defineProperty(out, name, {
      get() {
        if (fn === undefined) {
          const dl = Deno.dlopen(found, {
            [name]: LIBC_SYMBOLS[name],
          } as Deno.ForeignLibraryInterface);
          keep.push(dl);
          fn = dl.symbols[name];
        }
        return fn;
      },
    });
  }
  lib = out as Libc;
  return lib;
}

/** The calling thread's errno (read right after a failed synchronous call). */
export function errno(): number {
  const p = libc().__errno_location();
  return p ? new Deno.UnsafePointerView(p).getInt32() : 0;
}

/** strerror(3) of `code` ("unknown error" when libc has no text). */
export function strerror(code: number): string {
  const p = libc().strerror(code);
  return p ? Deno.UnsafePointerView.getCString(p) : "unknown error";
}

/** The current errno as "text (errno N)". */
export function errnoText(): string {
  const e = errno();
  return `${strerror(e)} (errno ${e})`;
}

/** NUL-terminated UTF-8 bytes for a C string argument; a NUL inside `s` is refused. */
export function cstr(s: string): Uint8Array<ArrayBuffer> {
  if (s.includes("\0")) throw new TypeError(`C string contains a NUL byte: ${JSON.stringify(s)}`);
  const b = new TextEncoder().encode(s);
  const out = new Uint8Array(b.length + 1);
  out.set(b);
  return out;
}

/** The address of `buf`'s bytes, for a pointer field inside a struct. */
export function ptrValue(buf: Uint8Array): bigint {
  return BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(buf as Uint8Array<ArrayBuffer>)));
}
