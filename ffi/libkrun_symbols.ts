/**
 * libkrun's 1.16 C API as Deno FFI sees it: the symbol table nerdbox loads and the constants its
 * header defines (log levels, NET_FLAG_* bits, disk and kernel formats). The one owner of these
 * numbers; ffi/libkrun.ts wraps the symbols in checked calls.
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
