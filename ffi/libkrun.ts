/**
 * libkrun (1.16 C API) through Deno FFI: a typed wrapper whose methods mirror the C calls. Every
 * call checks its arguments in TypeScript first (no NULL where the header does not allow it,
 * NUL-terminated strings, NULL-terminated string arrays kept alive across the call, integer
 * ranges, MACs as 6 bytes (lib/spec/mac.ts parses the text once; this layer takes the bytes), one
 * logger per process) and turns a negative return into a KrunError naming the call, the errno and
 * the arguments. Only parameters the header documents as optional are ever passed as NULL.
 * Around it: libkrun_symbols.ts (symbol table, constants), libkrun_errors.ts, libkrun_marshal.ts
 * (arena, argument checks), libkrun_log.ts (the one logger) and libkrun_net.ts (the NIC calls).
 */
import { checkKrunResult, KrunArgumentError } from "./libkrun_errors.ts";
import { initLog, type InitLogOptions, setLogLevel } from "./libkrun_log.ts";
import { addNet, type NetArgs } from "./libkrun_net.ts";
import {
  Arena,
  checkBool,
  checkInt,
  ctxId,
  describe,
  I32_MAX,
  U32_MAX,
} from "./libkrun_marshal.ts";
import { KRUN_SYMBOLS, type KrunSymbols } from "./libkrun_symbols.ts";

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
    return checkKrunResult(call, ret, args);
  }

  /** `krun_set_log_level`: initialises the logger (once per process). */
  setLogLevel(level: number): void {
    setLogLevel(this.#lib.symbols, level);
  }

  /** `krun_init_log`: initialises the logger with a target fd (once per process). */
  initLog(o: InitLogOptions): void {
    initLog(this.#lib.symbols, o);
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

  /** Runs `invoke` with an arena kept alive until it returns, then checks the result. */
  #call(call: string, args: Record<string, unknown>, invoke: (a: Arena) => number): number {
    const a = new Arena();
    const ret = invoke(a);
    a.release();
    return this.#check(call, ret, args);
  }

  /** `krun_set_root`: the guest's `/` as virtio-fs. */
  setRoot(ctx: number, rootPath: string): void {
    const call = "krun_set_root";
    this.#call(
      call,
      { ctx_id: ctx, root_path: rootPath },
      (a) => this.#lib.symbols.krun_set_root(ctxId(call, ctx), a.cstr(call, "root_path", rootPath)),
    );
  }

  /** `krun_add_virtiofs`: an extra virtio-fs share. */
  addVirtiofs(ctx: number, tag: string, path: string): void {
    const call = "krun_add_virtiofs";
    this.#call(call, { ctx_id: ctx, c_tag: tag, c_path: path }, (a) => {
      const c = ctxId(call, ctx);
      return this.#lib.symbols.krun_add_virtiofs(
        c,
        a.cstr(call, "c_tag", tag),
        a.cstr(call, "c_path", path),
      );
    });
  }

  /** `krun_add_virtiofs2`: an extra virtio-fs share with a DAX window of `shmSize` bytes. */
  addVirtiofs2(ctx: number, tag: string, path: string, shmSize: bigint): void {
    const call = "krun_add_virtiofs2";
    const args = { ctx_id: ctx, c_tag: tag, c_path: path, shm_size: String(shmSize) };
    this.#call(call, args, (a) => {
      const c = ctxId(call, ctx);
      if (typeof shmSize !== "bigint" || shmSize < 0n || shmSize >= 1n << 64n) {
        const got = describe(String(shmSize));
        throw new KrunArgumentError(call, "shm_size", `expected a u64 bigint, got ${got}`);
      }
      const cTag = a.cstr(call, "c_tag", tag);
      return this.#lib.symbols.krun_add_virtiofs2(c, cTag, a.cstr(call, "c_path", path), shmSize);
    });
  }

  /** `krun_add_disk2`: a block device (`/dev/vda`, …) of format RAW 0 / QCOW2 1 / VMDK 2. */
  addDisk2(ctx: number, blockId: string, path: string, format: number, readOnly: boolean): void {
    const call = "krun_add_disk2";
    const args = {
      ctx_id: ctx,
      c_block_id: blockId,
      c_disk_path: path,
      disk_format: format,
      read_only: readOnly,
    };
    this.#call(call, args, (a) => {
      const c = ctxId(call, ctx);
      checkInt(call, "disk_format", format, 0, U32_MAX);
      checkBool(call, "read_only", readOnly);
      const id = a.cstr(call, "c_block_id", blockId);
      const disk = a.cstr(call, "c_disk_path", path);
      return this.#lib.symbols.krun_add_disk2(c, id, disk, format, readOnly);
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
    const args = {
      ctx_id: ctx,
      kernel_path: kernelPath,
      kernel_format: format,
      initramfs: initramfs ?? null,
      cmdline: cmdline ?? null,
    };
    this.#call(call, args, (a) => {
      const c = ctxId(call, ctx);
      checkInt(call, "kernel_format", format, 0, U32_MAX);
      // Both optional parameters are documented as nullable: omitted means NULL.
      const ird = initramfs === undefined ? null : a.ptr(a.cstr(call, "initramfs", initramfs));
      const cmd = cmdline === undefined ? null : a.ptr(a.cstr(call, "cmdline", cmdline));
      const kernel = a.cstr(call, "kernel_path", kernelPath);
      return this.#lib.symbols.krun_set_kernel(c, kernel, format, ird, cmd);
    });
  }

  /** `krun_set_exec`: the guest program, its arguments (no argv[0]) and its full environment. */
  setExec(ctx: number, execPath: string, argv: string[], envp: string[]): void {
    const call = "krun_set_exec";
    this.#call(call, { ctx_id: ctx, exec_path: execPath, argv, envp }, (a) => {
      const c = ctxId(call, ctx);
      // envp NULL would copy nerdbox's own environment into the guest: always pass an array.
      return this.#lib.symbols.krun_set_exec(
        c,
        a.cstr(call, "exec_path", execPath),
        a.strArray(call, "argv", argv),
        a.strArray(call, "envp", envp),
      );
    });
  }

  /** `krun_set_env`: replaces the guest environment. */
  setEnv(ctx: number, envp: string[]): void {
    const call = "krun_set_env";
    this.#call(
      call,
      { ctx_id: ctx, envp },
      (a) => this.#lib.symbols.krun_set_env(ctxId(call, ctx), a.strArray(call, "envp", envp)),
    );
  }

  /** `krun_set_workdir`. */
  setWorkdir(ctx: number, path: string): void {
    const call = "krun_set_workdir";
    this.#call(
      call,
      { ctx_id: ctx, workdir_path: path },
      (a) =>
        this.#lib.symbols.krun_set_workdir(ctxId(call, ctx), a.cstr(call, "workdir_path", path)),
    );
  }

  /** `krun_set_rlimits`: entries `"<RLIMIT id>=<cur>:<max>"`. */
  setRlimits(ctx: number, rlimits: string[]): void {
    const call = "krun_set_rlimits";
    this.#call(
      call,
      { ctx_id: ctx, rlimits },
      (a) =>
        this.#lib.symbols.krun_set_rlimits(ctxId(call, ctx), a.strArray(call, "rlimits", rlimits)),
    );
  }

  /** `krun_set_port_map`: TSI port map, entries `"HOST:GUEST"` (refused after any NIC). */
  setPortMap(ctx: number, ports: string[]): void {
    const call = "krun_set_port_map";
    this.#call(
      call,
      { ctx_id: ctx, port_map: ports },
      (a) =>
        this.#lib.symbols.krun_set_port_map(ctxId(call, ctx), a.strArray(call, "port_map", ports)),
    );
  }

  /** `krun_add_net_unixstream`: a virtio-net NIC on a stream socket (passt, gvproxy). */
  addNetUnixstream(ctx: number, net: NetArgs): void {
    addNet(this.#lib.symbols, "krun_add_net_unixstream", ctx, net);
  }

  /** `krun_add_net_unixgram`: a virtio-net NIC on a datagram socket (vfkit-style gvproxy). */
  addNetUnixgram(ctx: number, net: NetArgs): void {
    addNet(this.#lib.symbols, "krun_add_net_unixgram", ctx, net);
  }

  /** `krun_set_console_output`: the implicit console writes to this file. */
  setConsoleOutput(ctx: number, path: string): void {
    const call = "krun_set_console_output";
    this.#call(
      call,
      { ctx_id: ctx, c_filepath: path },
      (a) =>
        this.#lib.symbols.krun_set_console_output(
          ctxId(call, ctx),
          a.cstr(call, "c_filepath", path),
        ),
    );
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
    const args = { ctx_id: ctx, console_id: consoleId, name, input_fd: inFd, output_fd: outFd };
    this.#call(call, args, (a) => {
      const c = ctxId(call, ctx);
      checkInt(call, "console_id", consoleId, 0, U32_MAX);
      checkInt(call, "input_fd", inFd, 0, I32_MAX);
      checkInt(call, "output_fd", outFd, 0, I32_MAX);
      const cName = a.cstr(call, "name", name);
      return this.#lib.symbols.krun_add_console_port_inout(c, consoleId, cName, inFd, outFd);
    });
  }

  /** `krun_add_vsock_port`: guest connects to vsock `port` → libkrun connects to host `path`. */
  addVsockPort(ctx: number, port: number, path: string): void {
    const call = "krun_add_vsock_port";
    this.#call(call, { ctx_id: ctx, port, c_filepath: path }, (a) => {
      const c = ctxId(call, ctx);
      checkInt(call, "port", port, 0, U32_MAX);
      return this.#lib.symbols.krun_add_vsock_port(c, port, a.cstr(call, "c_filepath", path));
    });
  }

  /** `krun_add_vsock_port2`: as addVsockPort, or (listen) libkrun binds `path` for the guest. */
  addVsockPort2(ctx: number, port: number, path: string, listen: boolean): void {
    const call = "krun_add_vsock_port2";
    this.#call(call, { ctx_id: ctx, port, c_filepath: path, listen }, (a) => {
      const c = ctxId(call, ctx);
      checkInt(call, "port", port, 0, U32_MAX);
      checkBool(call, "listen", listen);
      const file = a.cstr(call, "c_filepath", path);
      return this.#lib.symbols.krun_add_vsock_port2(c, port, file, listen);
    });
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
