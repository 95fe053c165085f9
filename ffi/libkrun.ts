/**
 * libkrun (1.16 C API) through Deno FFI: the symbol table and a typed wrapper. Every call checks
 * its arguments in TypeScript first (no NULL where the header does not allow it, NUL-terminated
 * strings, NULL-terminated string arrays kept alive across the call, integer ranges, MACs as 6
 * bytes (lib/spec/mac.ts parses the text once; this layer takes the bytes),
 * one logger per process) and turns a negative return into a KrunError naming the call, the errno
 * and the arguments. Only parameters the header documents as optional are ever passed as NULL.
 * One file over ~400 lines: one C API, one symbol table, one wrapper whose methods mirror it.
 */

/** The libkrun symbols nerdbox uses (all exist in libkrun.so.1.16.0 as shipped by boxlite). */
export const KRUN_SYMBOLS = {
  krun_set_log_level: { parameters: ["u32"], result: "i32" },
  krun_init_log: { parameters: ["i32", "u32", "u32", "u32"], result: "i32" },
  krun_create_ctx: { parameters: [], result: "i32" },
  krun_free_ctx: { parameters: ["u32"], result: "i32" },
  krun_set_vm_config: { parameters: ["u32", "u8", "u32"], result: "i32" },
  krun_split_irqchip: { parameters: ["u32", "bool"], result: "i32" },
  krun_get_max_vcpus: { parameters: [], result: "i32" },
  krun_set_root: { parameters: ["u32", "buffer"], result: "i32" },
  krun_add_virtiofs: { parameters: ["u32", "buffer", "buffer"], result: "i32" },
  krun_add_virtiofs2: { parameters: ["u32", "buffer", "buffer", "u64"], result: "i32" },
  krun_add_disk2: { parameters: ["u32", "buffer", "buffer", "u32", "bool"], result: "i32" },
  krun_set_kernel: {
    parameters: ["u32", "buffer", "u32", "pointer", "pointer"],
    result: "i32",
  },
  krun_set_exec: { parameters: ["u32", "buffer", "pointer", "pointer"], result: "i32" },
  krun_set_env: { parameters: ["u32", "pointer"], result: "i32" },
  krun_set_workdir: { parameters: ["u32", "buffer"], result: "i32" },
  krun_set_rlimits: { parameters: ["u32", "pointer"], result: "i32" },
  krun_set_port_map: { parameters: ["u32", "pointer"], result: "i32" },
  krun_add_net_unixstream: {
    parameters: ["u32", "pointer", "i32", "buffer", "u32", "u32"],
    result: "i32",
  },
  krun_add_net_unixgram: {
    parameters: ["u32", "pointer", "i32", "buffer", "u32", "u32"],
    result: "i32",
  },
  krun_set_console_output: { parameters: ["u32", "buffer"], result: "i32" },
  krun_disable_implicit_console: { parameters: ["u32"], result: "i32" },
  krun_add_virtio_console_multiport: { parameters: ["u32"], result: "i32" },
  krun_add_console_port_inout: {
    parameters: ["u32", "u32", "buffer", "i32", "i32"],
    result: "i32",
  },
  krun_add_vsock_port: { parameters: ["u32", "u32", "buffer"], result: "i32" },
  krun_add_vsock_port2: { parameters: ["u32", "u32", "buffer", "bool"], result: "i32" },
  krun_get_shutdown_eventfd: { parameters: ["u32"], result: "i32" },
  krun_setuid: { parameters: ["u32", "u32"], result: "i32" },
  krun_setgid: { parameters: ["u32", "u32"], result: "i32" },
  krun_start_enter: { parameters: ["u32"], result: "i32", nonblocking: true },
} as const satisfies Deno.ForeignLibraryInterface;

/** The loaded symbol table. */
export type KrunSymbols = Deno.DynamicLibrary<typeof KRUN_SYMBOLS>["symbols"];

/** Log levels (`krun_set_log_level`). */
export const KRUN_LOG_LEVEL = { off: 0, error: 1, warn: 2, info: 3, debug: 4, trace: 5 } as const;
/** A log level name. */
export type KrunLogLevelName = keyof typeof KRUN_LOG_LEVEL;
/** `krun_add_net_*` flag: send "VFKT" after connecting (unixgram path mode). */
export const NET_FLAG_VFKIT = 1;
/** The unreleased `NET_FLAG_INCLUDE_VNET_HEADER` bit (1.16 rejects it with -22). */
export const NET_FLAG_INCLUDE_VNET_HEADER = 1 << 1;
/** Every virtio-net feature bit libkrun accepts (NET_ALL). */
export const NET_ALL_FEATURES = 0x5D83;
/** `krun_add_disk2` formats. */
export const KRUN_DISK_FORMAT = { raw: 0, qcow2: 1, vmdk: 2 } as const;
/** `krun_set_kernel` formats. */
export const KRUN_KERNEL_FORMAT = {
  raw: 0,
  elf: 1,
  pe_gz: 2,
  image_bz2: 3,
  image_gz: 4,
  image_zstd: 5,
} as const;
/** Most entries libkrun accepts in a string array. */
export const MAX_STRING_ARRAY = 4096;

const ERRNO_NAMES: Record<number, string> = {
  1: "EPERM",
  2: "ENOENT",
  3: "ESRCH",
  4: "EINTR",
  5: "EIO",
  6: "ENXIO",
  7: "E2BIG",
  9: "EBADF",
  11: "EAGAIN",
  12: "ENOMEM",
  13: "EACCES",
  14: "EFAULT",
  16: "EBUSY",
  17: "EEXIST",
  19: "ENODEV",
  20: "ENOTDIR",
  21: "EISDIR",
  22: "EINVAL",
  24: "EMFILE",
  28: "ENOSPC",
  36: "ENAMETOOLONG",
  38: "ENOSYS",
  95: "EOPNOTSUPP",
  98: "EADDRINUSE",
  111: "ECONNREFUSED",
};

/** The symbolic name of a (positive) errno, e.g. 22 → EINVAL. */
export function errnoName(errno: number): string {
  return ERRNO_NAMES[errno] ?? `errno ${errno}`;
}

/** A libkrun call returned a negative errno. */
export class KrunError extends Error {
  /** The C function, e.g. `krun_set_port_map`. */
  readonly call: string;
  /** The positive errno (22 for -22). */
  readonly errno: number;
  /** Its symbolic name (EINVAL). */
  readonly errnoName: string;
  /** The arguments as passed, by parameter name. */
  readonly args: Record<string, unknown>;
  constructor(call: string, ret: number, args: Record<string, unknown>) {
    const errno = -ret;
    const name = errnoName(errno);
    super(`${call}(${formatArgs(args)}) failed: ${name} (${ret})`);
    this.name = "KrunError";
    this.call = call;
    this.errno = errno;
    this.errnoName = name;
    this.args = args;
  }
}

/** The wrapper refused a call before it reached libkrun (it would crash or be misread). */
export class KrunArgumentError extends Error {
  /** The C function. */
  readonly call: string;
  /** The parameter at fault. */
  readonly param: string;
  constructor(call: string, param: string, message: string) {
    super(`${call}: ${param}: ${message}`);
    this.name = "KrunArgumentError";
    this.call = call;
    this.param = param;
  }
}

function formatArgs(args: Record<string, unknown>): string {
  return Object.entries(args).map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(", ");
}

// libkrun keeps one logger per process; a second init aborts the process (exit 134).
let loggerInitialized = false;

/** Whether this process already initialised libkrun's logger. */
export function libkrunLoggerInitialized(): boolean {
  return loggerInitialized;
}

const enc = new TextEncoder();

/** Holds the buffers of one call so they stay reachable until it returns. */
class Arena {
  readonly #keep: ArrayBufferView[] = [];

  cstr(call: string, param: string, value: unknown): Uint8Array<ArrayBuffer> {
    if (typeof value !== "string") {
      throw new KrunArgumentError(call, param, `expected a string, got ${describe(value)}`);
    }
    if (value.includes("\0")) {
      throw new KrunArgumentError(call, param, `contains a NUL byte: ${JSON.stringify(value)}`);
    }
    const buf = new Uint8Array(enc.encode(value).length + 1);
    enc.encodeInto(value, buf);
    this.#keep.push(buf);
    return buf;
  }

  ptr(buf: ArrayBufferView<ArrayBuffer>): Deno.PointerObject {
    this.#keep.push(buf);
    const p = Deno.UnsafePointer.of(buf);
    if (p === null) throw new Error("internal: pointer to a live buffer is NULL");
    return p;
  }

  /** A NULL-terminated `char *const[]`. */
  strArray(call: string, param: string, values: unknown): Deno.PointerObject {
    if (!Array.isArray(values)) {
      throw new KrunArgumentError(
        call,
        param,
        `expected an array of strings, got ${describe(values)}`,
      );
    }
    if (values.length > MAX_STRING_ARRAY) {
      throw new KrunArgumentError(
        call,
        param,
        `${values.length} entries, libkrun accepts at most ${MAX_STRING_ARRAY}`,
      );
    }
    const addrs = new BigUint64Array(values.length + 1);
    values.forEach((v, i) => {
      const p = this.ptr(this.cstr(call, `${param}[${i}]`, v));
      addrs[i] = BigInt(Deno.UnsafePointer.value(p));
    });
    addrs[values.length] = 0n;
    return this.ptr(addrs);
  }

  mac(call: string, param: string, value: unknown): Uint8Array<ArrayBuffer> {
    if (!(value instanceof Uint8Array) || value.length !== 6) {
      throw new KrunArgumentError(
        call,
        param,
        `expected a 6-byte Uint8Array, got ${describe(value)}`,
      );
    }
    const bytes = new Uint8Array(value);
    this.#keep.push(bytes);
    return bytes;
  }

  /** Keeps every buffer reachable up to this point (call it after the FFI call returns). */
  release(): number {
    return this.#keep.length;
  }
}

function describe(v: unknown): string {
  if (v === null) return "null";
  if (v === undefined) return "undefined";
  if (v instanceof Uint8Array) return `a ${v.length}-byte Uint8Array`;
  return `${typeof v} ${JSON.stringify(v)}`;
}

function checkInt(call: string, param: string, v: unknown, min: number, max: number): number {
  if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > max) {
    throw new KrunArgumentError(
      call,
      param,
      `expected an integer in ${min}..${max}, got ${describe(v)}`,
    );
  }
  return v;
}

const U32_MAX = 0xffff_ffff;
const I32_MIN = -0x8000_0000;
const I32_MAX = 0x7fff_ffff;

function ctxId(call: string, ctx: unknown): number {
  return checkInt(call, "ctx_id", ctx, 0, I32_MAX);
}

function checkBool(call: string, param: string, v: unknown): boolean {
  if (typeof v !== "boolean") {
    throw new KrunArgumentError(call, param, `expected a boolean, got ${describe(v)}`);
  }
  return v;
}

/** Options of `krun_init_log`. */
export interface InitLogOptions {
  /** Log target fd: -1 (stderr, default), 1, 2, or ≥3 (libkrun takes it over). */
  fd?: number;
  /** 0 off … 5 trace. */
  level: number;
  /** 0 auto, 1 always, 2 never colour. */
  style?: number;
  /** 0, or 1 = ignore RUST_LOG. */
  options?: number;
}

/** A NIC backend for `krun_add_net_unixstream` / `krun_add_net_unixgram`. */
export interface NetArgs {
  /** Socket path (path mode) — exactly one of `path` and `fd`. */
  path?: string;
  /** Connected socket fd (fd mode). */
  fd?: number;
  /** The MAC's 6 bytes (`uint8_t c_mac[6]`). */
  mac: Uint8Array;
  /** virtio-net feature bits. */
  features: number;
  /** NET_FLAG_* bits. */
  flags: number;
}

/** A loaded libkrun: typed, checked calls. */
export class Libkrun {
  /** The file it was loaded from. */
  readonly path: string;
  /** The libkrunfw preloaded from beside it, if any. */
  readonly libkrunfwPath?: string;
  readonly #lib: Deno.DynamicLibrary<typeof KRUN_SYMBOLS>;
  readonly #fw?: Deno.DynamicLibrary<Record<string, never>>;

  /**
   * Loads libkrun from `path`, first preloading `libkrunfw` when `libkrunfwPath` is given (libkrun
   * dlopens it by SONAME, so a copy beside libkrun must already be loaded to be found).
   */
  constructor(path: string, libkrunfwPath?: string) {
    if (libkrunfwPath) {
      this.#fw = Deno.dlopen(libkrunfwPath, {});
      this.libkrunfwPath = libkrunfwPath;
    }
    try {
      this.#lib = Deno.dlopen(path, KRUN_SYMBOLS);
    } catch (e) {
      this.#fw?.close();
      throw e;
    }
    this.path = path;
  }

  /** The raw symbols (no checks): for tests that must show what the wrapper prevents. */
  get unsafeSymbols(): KrunSymbols {
    return this.#lib.symbols;
  }

  #check(call: string, ret: number, args: Record<string, unknown>): number {
    if (ret < 0) throw new KrunError(call, ret, args);
    return ret;
  }

  /** `krun_set_log_level`: initialises the logger (once per process). */
  setLogLevel(level: number): void {
    const call = "krun_set_log_level";
    checkInt(call, "level", level, 0, U32_MAX);
    this.#claimLogger(call);
    this.#check(call, this.#lib.symbols.krun_set_log_level(level), { level });
  }

  /** `krun_init_log`: initialises the logger with a target fd (once per process). */
  initLog(o: InitLogOptions): void {
    const call = "krun_init_log";
    const fd = checkInt(call, "target_fd", o.fd ?? -1, I32_MIN, I32_MAX);
    const level = checkInt(call, "level", o.level, 0, U32_MAX);
    const style = checkInt(call, "style", o.style ?? 0, 0, U32_MAX);
    const options = checkInt(call, "options", o.options ?? 0, 0, U32_MAX);
    this.#claimLogger(call);
    const ret = this.#lib.symbols.krun_init_log(fd, level, style, options);
    // EINVAL is returned before any logger is installed: a corrected call may follow.
    if (ret === -22) loggerInitialized = false;
    this.#check(call, ret, { target_fd: fd, level, style, options });
  }

  #claimLogger(call: string): void {
    if (loggerInitialized) {
      throw new KrunArgumentError(
        call,
        "logger",
        "libkrun's logger is already initialised in this process (a second init aborts it)",
      );
    }
    loggerInitialized = true;
  }

  /** `krun_create_ctx`: a new configuration context id. */
  createCtx(): number {
    return this.#check("krun_create_ctx", this.#lib.symbols.krun_create_ctx(), {});
  }

  /** `krun_free_ctx`. */
  freeCtx(ctx: number): void {
    const call = "krun_free_ctx";
    this.#check(call, this.#lib.symbols.krun_free_ctx(ctxId(call, ctx)), { ctx_id: ctx });
  }

  /** `krun_set_vm_config`: vCPUs (1..255) and RAM in MiB. */
  setVmConfig(ctx: number, vcpus: number, ramMib: number): void {
    const call = "krun_set_vm_config";
    const c = ctxId(call, ctx);
    checkInt(call, "num_vcpus", vcpus, 0, 255);
    checkInt(call, "ram_mib", ramMib, 0, U32_MAX);
    const ret = this.#lib.symbols.krun_set_vm_config(c, vcpus, ramMib);
    this.#check(call, ret, { ctx_id: ctx, num_vcpus: vcpus, ram_mib: ramMib });
  }

  /** `krun_split_irqchip` (x86_64). */
  splitIrqchip(ctx: number, enable: boolean): void {
    const call = "krun_split_irqchip";
    const c = ctxId(call, ctx);
    checkBool(call, "enable", enable);
    this.#check(call, this.#lib.symbols.krun_split_irqchip(c, enable), { ctx_id: ctx, enable });
  }

  /** `krun_get_max_vcpus` (opens /dev/kvm). */
  getMaxVcpus(): number {
    return this.#check("krun_get_max_vcpus", this.#lib.symbols.krun_get_max_vcpus(), {});
  }

  /** `krun_set_root`: the guest's `/` as virtio-fs. */
  setRoot(ctx: number, rootPath: string): void {
    const call = "krun_set_root";
    const a = new Arena();
    const ret = this.#lib.symbols.krun_set_root(
      ctxId(call, ctx),
      a.cstr(call, "root_path", rootPath),
    );
    a.release();
    this.#check(call, ret, { ctx_id: ctx, root_path: rootPath });
  }

  /** `krun_add_virtiofs`: an extra virtio-fs share. */
  addVirtiofs(ctx: number, tag: string, path: string): void {
    const call = "krun_add_virtiofs";
    const a = new Arena();
    const c = ctxId(call, ctx);
    const ret = this.#lib.symbols.krun_add_virtiofs(
      c,
      a.cstr(call, "c_tag", tag),
      a.cstr(call, "c_path", path),
    );
    a.release();
    this.#check(call, ret, { ctx_id: ctx, c_tag: tag, c_path: path });
  }

  /** `krun_add_virtiofs2`: an extra virtio-fs share with a DAX window of `shmSize` bytes. */
  addVirtiofs2(ctx: number, tag: string, path: string, shmSize: bigint): void {
    const call = "krun_add_virtiofs2";
    const a = new Arena();
    const c = ctxId(call, ctx);
    if (typeof shmSize !== "bigint" || shmSize < 0n || shmSize >= 1n << 64n) {
      throw new KrunArgumentError(
        call,
        "shm_size",
        `expected a u64 bigint, got ${describe(String(shmSize))}`,
      );
    }
    const ret = this.#lib.symbols.krun_add_virtiofs2(
      c,
      a.cstr(call, "c_tag", tag),
      a.cstr(call, "c_path", path),
      shmSize,
    );
    a.release();
    this.#check(call, ret, { ctx_id: ctx, c_tag: tag, c_path: path, shm_size: String(shmSize) });
  }

  /** `krun_add_disk2`: a block device (`/dev/vda`, …) of format RAW 0 / QCOW2 1 / VMDK 2. */
  addDisk2(ctx: number, blockId: string, path: string, format: number, readOnly: boolean): void {
    const call = "krun_add_disk2";
    const a = new Arena();
    const c = ctxId(call, ctx);
    checkInt(call, "disk_format", format, 0, U32_MAX);
    checkBool(call, "read_only", readOnly);
    const ret = this.#lib.symbols.krun_add_disk2(
      c,
      a.cstr(call, "c_block_id", blockId),
      a.cstr(call, "c_disk_path", path),
      format,
      readOnly,
    );
    a.release();
    this.#check(call, ret, {
      ctx_id: ctx,
      c_block_id: blockId,
      c_disk_path: path,
      disk_format: format,
      read_only: readOnly,
    });
  }

  /** `krun_set_kernel`: kernel image, format, optional initramfs and command line. */
  setKernel(
    ctx: number,
    kernelPath: string,
    format: number,
    initramfs?: string,
    cmdline?: string,
  ): void {
    const call = "krun_set_kernel";
    const a = new Arena();
    const c = ctxId(call, ctx);
    checkInt(call, "kernel_format", format, 0, U32_MAX);
    // Both optional parameters are documented as nullable: omitted means NULL.
    const ird = initramfs === undefined ? null : a.ptr(a.cstr(call, "initramfs", initramfs));
    const cmd = cmdline === undefined ? null : a.ptr(a.cstr(call, "cmdline", cmdline));
    const ret = this.#lib.symbols.krun_set_kernel(
      c,
      a.cstr(call, "kernel_path", kernelPath),
      format,
      ird,
      cmd,
    );
    a.release();
    this.#check(call, ret, {
      ctx_id: ctx,
      kernel_path: kernelPath,
      kernel_format: format,
      initramfs: initramfs ?? null,
      cmdline: cmdline ?? null,
    });
  }

  /** `krun_set_exec`: the guest program, its arguments (no argv[0]) and its full environment. */
  setExec(ctx: number, execPath: string, argv: string[], envp: string[]): void {
    const call = "krun_set_exec";
    const a = new Arena();
    const c = ctxId(call, ctx);
    // envp NULL would copy nerdbox's own environment into the guest: always pass an array.
    const ret = this.#lib.symbols.krun_set_exec(
      c,
      a.cstr(call, "exec_path", execPath),
      a.strArray(call, "argv", argv),
      a.strArray(call, "envp", envp),
    );
    a.release();
    this.#check(call, ret, { ctx_id: ctx, exec_path: execPath, argv, envp });
  }

  /** `krun_set_env`: replaces the guest environment. */
  setEnv(ctx: number, envp: string[]): void {
    const call = "krun_set_env";
    const a = new Arena();
    const ret = this.#lib.symbols.krun_set_env(ctxId(call, ctx), a.strArray(call, "envp", envp));
    a.release();
    this.#check(call, ret, { ctx_id: ctx, envp });
  }

  /** `krun_set_workdir`. */
  setWorkdir(ctx: number, path: string): void {
    const call = "krun_set_workdir";
    const a = new Arena();
    const ret = this.#lib.symbols.krun_set_workdir(
      ctxId(call, ctx),
      a.cstr(call, "workdir_path", path),
    );
    a.release();
    this.#check(call, ret, { ctx_id: ctx, workdir_path: path });
  }

  /** `krun_set_rlimits`: entries `"<RLIMIT id>=<cur>:<max>"`. */
  setRlimits(ctx: number, rlimits: string[]): void {
    const call = "krun_set_rlimits";
    const a = new Arena();
    const ret = this.#lib.symbols.krun_set_rlimits(
      ctxId(call, ctx),
      a.strArray(call, "rlimits", rlimits),
    );
    a.release();
    this.#check(call, ret, { ctx_id: ctx, rlimits });
  }

  /** `krun_set_port_map`: TSI port map, entries `"HOST:GUEST"` (refused after any NIC). */
  setPortMap(ctx: number, ports: string[]): void {
    const call = "krun_set_port_map";
    const a = new Arena();
    const ret = this.#lib.symbols.krun_set_port_map(
      ctxId(call, ctx),
      a.strArray(call, "port_map", ports),
    );
    a.release();
    this.#check(call, ret, { ctx_id: ctx, port_map: ports });
  }

  /** `krun_add_net_unixstream`: a virtio-net NIC on a stream socket (passt, gvproxy). */
  addNetUnixstream(ctx: number, net: NetArgs): void {
    this.#addNet("krun_add_net_unixstream", ctx, net);
  }

  /** `krun_add_net_unixgram`: a virtio-net NIC on a datagram socket (vfkit-style gvproxy). */
  addNetUnixgram(ctx: number, net: NetArgs): void {
    this.#addNet("krun_add_net_unixgram", ctx, net);
  }

  #addNet(call: "krun_add_net_unixstream" | "krun_add_net_unixgram", ctx: number, n: NetArgs) {
    const a = new Arena();
    const c = ctxId(call, ctx);
    const hasPath = n.path !== undefined;
    const hasFd = n.fd !== undefined && n.fd !== -1;
    if (hasPath === hasFd) {
      throw new KrunArgumentError(call, "c_path/fd", "give exactly one of a socket path or an fd");
    }
    const fd = hasFd ? checkInt(call, "fd", n.fd, 0, I32_MAX) : -1;
    // In fd mode the header documents c_path as NULL.
    const path = hasPath ? a.ptr(a.cstr(call, "c_path", n.path)) : null;
    const mac = a.mac(call, "c_mac", n.mac);
    checkInt(call, "features", n.features, 0, U32_MAX);
    checkInt(call, "flags", n.flags, 0, U32_MAX);
    const ret = this.#lib.symbols[call](c, path, fd, mac, n.features, n.flags);
    a.release();
    this.#check(call, ret, {
      ctx_id: ctx,
      c_path: n.path ?? null,
      fd,
      c_mac: [...mac].map((b) => b.toString(16).padStart(2, "0")).join(":"),
      features: n.features,
      flags: n.flags,
    });
  }

  /** `krun_set_console_output`: the implicit console writes to this file. */
  setConsoleOutput(ctx: number, path: string): void {
    const call = "krun_set_console_output";
    const a = new Arena();
    const ret = this.#lib.symbols.krun_set_console_output(
      ctxId(call, ctx),
      a.cstr(call, "c_filepath", path),
    );
    a.release();
    this.#check(call, ret, { ctx_id: ctx, c_filepath: path });
  }

  /** `krun_disable_implicit_console`. */
  disableImplicitConsole(ctx: number): void {
    const call = "krun_disable_implicit_console";
    this.#check(call, this.#lib.symbols.krun_disable_implicit_console(ctxId(call, ctx)), {
      ctx_id: ctx,
    });
  }

  /** `krun_add_virtio_console_multiport`: a multiport console; returns its id. */
  addVirtioConsoleMultiport(ctx: number): number {
    const call = "krun_add_virtio_console_multiport";
    const ret = this.#lib.symbols.krun_add_virtio_console_multiport(ctxId(call, ctx));
    return this.#check(call, ret, { ctx_id: ctx });
  }

  /** `krun_add_console_port_inout`: a named port on a multiport console, backed by two fds. */
  addConsolePortInout(
    ctx: number,
    consoleId: number,
    name: string,
    inFd: number,
    outFd: number,
  ): void {
    const call = "krun_add_console_port_inout";
    const a = new Arena();
    const c = ctxId(call, ctx);
    checkInt(call, "console_id", consoleId, 0, U32_MAX);
    checkInt(call, "input_fd", inFd, 0, I32_MAX);
    checkInt(call, "output_fd", outFd, 0, I32_MAX);
    const ret = this.#lib.symbols.krun_add_console_port_inout(
      c,
      consoleId,
      a.cstr(call, "name", name),
      inFd,
      outFd,
    );
    a.release();
    this.#check(call, ret, {
      ctx_id: ctx,
      console_id: consoleId,
      name,
      input_fd: inFd,
      output_fd: outFd,
    });
  }

  /** `krun_add_vsock_port`: guest connects to vsock `port` → libkrun connects to host `path`. */
  addVsockPort(ctx: number, port: number, path: string): void {
    const call = "krun_add_vsock_port";
    const a = new Arena();
    const c = ctxId(call, ctx);
    checkInt(call, "port", port, 0, U32_MAX);
    const ret = this.#lib.symbols.krun_add_vsock_port(c, port, a.cstr(call, "c_filepath", path));
    a.release();
    this.#check(call, ret, { ctx_id: ctx, port, c_filepath: path });
  }

  /** `krun_add_vsock_port2`: as addVsockPort, or (listen) libkrun binds `path` for the guest. */
  addVsockPort2(ctx: number, port: number, path: string, listen: boolean): void {
    const call = "krun_add_vsock_port2";
    const a = new Arena();
    const c = ctxId(call, ctx);
    checkInt(call, "port", port, 0, U32_MAX);
    checkBool(call, "listen", listen);
    const ret = this.#lib.symbols.krun_add_vsock_port2(
      c,
      port,
      a.cstr(call, "c_filepath", path),
      listen,
    );
    a.release();
    this.#check(call, ret, { ctx_id: ctx, port, c_filepath: path, listen });
  }

  /** `krun_get_shutdown_eventfd` (EFI builds only; -22 otherwise). */
  getShutdownEventfd(ctx: number): number {
    const call = "krun_get_shutdown_eventfd";
    const ret = this.#lib.symbols.krun_get_shutdown_eventfd(ctxId(call, ctx));
    return this.#check(call, ret, { ctx_id: ctx });
  }

  /** `krun_setuid`: the VMM drops to this uid after opening its files. */
  setuid(ctx: number, uid: number): void {
    const call = "krun_setuid";
    const c = ctxId(call, ctx);
    checkInt(call, "uid", uid, 0, U32_MAX);
    this.#check(call, this.#lib.symbols.krun_setuid(c, uid), { ctx_id: ctx, uid });
  }

  /** `krun_setgid`: the VMM drops to this gid after opening its files. */
  setgid(ctx: number, gid: number): void {
    const call = "krun_setgid";
    const c = ctxId(call, ctx);
    checkInt(call, "gid", gid, 0, U32_MAX);
    this.#check(call, this.#lib.symbols.krun_setgid(c, gid), { ctx_id: ctx, gid });
  }

  /**
   * `krun_start_enter`: boots the VM. On success it never returns — libkrun `_exit`s the process
   * with the workload's status — so call it only in a process made for this VM. Rejects with a
   * KrunError for failures before the VM runs.
   */
  async startEnter(ctx: number): Promise<never> {
    const call = "krun_start_enter";
    const ret = await this.#lib.symbols.krun_start_enter(ctxId(call, ctx));
    this.#check(call, ret, { ctx_id: ctx });
    throw new Error(`krun_start_enter returned ${ret} without ending the process`);
  }

  /** Unloads the library (tests only: libkrun has global state). */
  close(): void {
    this.#lib.close();
    this.#fw?.close();
  }
}
