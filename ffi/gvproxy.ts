/**
 * libgvproxy (gvisor-tap-vsock as a C library, from the boxlite npm package, installed by setup
 * into /usr/local/lib) through Deno.dlopen: create/destroy a proxy from a JSON config, read its
 * version and stats. The log callback is left unset (it runs on Go threads).
 */

/** Default location of the library (scripts/setup_libkrun.ts); NERDBOX_LIBGVPROXY overrides. */
export const LIBGVPROXY_PATH = "/usr/local/lib/libgvproxy.so";

const SYMBOLS = {
  gvproxy_create: { parameters: ["buffer"], result: "i64" },
  gvproxy_destroy: { parameters: ["i64"], result: "i32" },
  gvproxy_get_stats: { parameters: ["i64"], result: "pointer" },
  gvproxy_get_version: { parameters: [], result: "pointer" },
  gvproxy_free_string: { parameters: ["pointer"], result: "void" },
} as const;

type Lib = Deno.DynamicLibrary<typeof SYMBOLS>;
let lib: Lib | undefined;

/** Opens libgvproxy once; fails with a message naming the path and the setup step. */
export function libgvproxy(): Lib {
  if (lib) return lib;
  const path = Deno.env.get("NERDBOX_LIBGVPROXY") ?? LIBGVPROXY_PATH;
  try {
    lib = Deno.dlopen(path, SYMBOLS);
  } catch (err) {
    throw new Error(
      `libgvproxy: cannot load ${path} (run \`bin/deno task setup\`): ${(err as Error).message}`,
    );
  }
  return lib;
}

function cstr(s: string): Uint8Array<ArrayBuffer> {
  const b = new TextEncoder().encode(s + "\0");
  if (b.indexOf(0) !== b.length - 1) throw new Error("libgvproxy: string contains a NUL byte");
  return b;
}

function takeString(p: Deno.PointerValue): string | undefined {
  if (p === null) return undefined;
  const s = new Deno.UnsafePointerView(p).getCString();
  libgvproxy().symbols.gvproxy_free_string(p);
  return s;
}

/** `gvproxy_create(json)`: the instance id, or -1 when the config is rejected. */
export function gvproxyCreate(json: string): number {
  return Number(libgvproxy().symbols.gvproxy_create(cstr(json)));
}

/** `gvproxy_destroy(id)`: 0, or -1 for an unknown id. */
export function gvproxyDestroy(id: number): number {
  return libgvproxy().symbols.gvproxy_destroy(BigInt(id));
}

/** The gvisor-tap-vsock version string. */
export function gvproxyVersion(): string {
  return takeString(libgvproxy().symbols.gvproxy_get_version()) ?? "";
}

/** Counters of one instance as JSON text, or undefined for an unknown id. */
export function gvproxyStats(id: number): string | undefined {
  return takeString(libgvproxy().symbols.gvproxy_get_stats(BigInt(id)));
}
