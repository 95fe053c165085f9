/**
 * Finds libkrun.so.1: `--libkrun PATH`, else NERDBOX_LIBKRUN, else LD_LIBRARY_PATH and the usual
 * system library directories (including /usr/local/lib, where `deno task setup` installs it).
 * libkrunfw.so.5 beside it is preloaded, because libkrun dlopens it by SONAME.
 */
import { Libkrun } from "../../ffi/libkrun.ts";

/** The file name looked for in each directory. */
export const LIBKRUN_SONAME = "libkrun.so.1";
/** The firmware library libkrun 1.16 dlopens. */
export const LIBKRUNFW_SONAME = "libkrunfw.so.5";

/** System directories searched, in order, after LD_LIBRARY_PATH. */
export const SYSTEM_LIB_DIRS = [
  "/usr/local/lib64",
  "/usr/local/lib",
  "/usr/local/lib/x86_64-linux-gnu",
  "/usr/lib64",
  "/usr/lib/x86_64-linux-gnu",
  "/usr/lib",
  "/lib64",
  "/lib/x86_64-linux-gnu",
  "/lib",
];

/** Where to look for libkrun. */
export interface LocateOptions {
  /** `--libkrun PATH`: used alone when given. */
  explicit?: string;
  /** Environment lookup (defaults to Deno.env.get). */
  env?: (name: string) => string | undefined;
}

/** A found libkrun. */
export interface LibkrunLocation {
  path: string;
  /** libkrunfw.so.5 beside it (by the given path or its resolved target), when present. */
  libkrunfw?: string;
  /** How it was chosen: `--libkrun`, `NERDBOX_LIBKRUN` or `search`. */
  source: "--libkrun" | "NERDBOX_LIBKRUN" | "search";
}

/** libkrun was not found; lists every path searched. */
export class LibkrunNotFoundError extends Error {
  /** Every candidate path, in order. */
  readonly searched: string[];
  constructor(searched: string[], why: string) {
    super(
      `libkrun not found (${why}); searched:\n${searched.map((p) => `  ${p}`).join("\n")}\n` +
        "install libkrun (bin/deno task setup installs it into /usr/local/lib), pass " +
        "--libkrun PATH or set NERDBOX_LIBKRUN, or use --backend qemu",
    );
    this.name = "LibkrunNotFoundError";
    this.searched = searched;
  }
}

function isFile(path: string): boolean {
  try {
    return Deno.statSync(path).isFile;
  } catch {
    return false;
  }
}

function dirOf(path: string): string {
  const i = path.lastIndexOf("/");
  return i <= 0 ? "/" : path.slice(0, i);
}

/** The candidate paths in search order (without an explicit path). */
export function searchPaths(env: (name: string) => string | undefined = Deno.env.get): string[] {
  const dirs = (env("LD_LIBRARY_PATH") ?? "").split(":").filter((d) => d.startsWith("/"));
  return [...new Set([...dirs, ...SYSTEM_LIB_DIRS])].map((d) => `${d}/${LIBKRUN_SONAME}`);
}

/** The libkrunfw to preload for a libkrun at `path`, if one is beside it. */
export function findLibkrunfw(path: string): string | undefined {
  const dirs = [dirOf(path)];
  try {
    dirs.push(dirOf(Deno.realPathSync(path)));
  } catch {
    // unresolvable: only the given directory
  }
  return dirs.map((d) => `${d}/${LIBKRUNFW_SONAME}`).find(isFile);
}

/** Finds libkrun or throws LibkrunNotFoundError naming every path searched. */
export function locateLibkrun(opts: LocateOptions = {}): LibkrunLocation {
  const env = opts.env ?? ((n: string) => Deno.env.get(n));
  const pick = (path: string, source: LibkrunLocation["source"]): LibkrunLocation => {
    const fw = findLibkrunfw(path);
    return fw ? { path, libkrunfw: fw, source } : { path, source };
  };
  if (opts.explicit !== undefined) {
    if (!isFile(opts.explicit)) {
      throw new LibkrunNotFoundError([opts.explicit], "--libkrun names no file");
    }
    return pick(opts.explicit, "--libkrun");
  }
  const fromEnv = env("NERDBOX_LIBKRUN");
  if (fromEnv) {
    if (!isFile(fromEnv)) {
      throw new LibkrunNotFoundError([fromEnv], "NERDBOX_LIBKRUN names no file");
    }
    return pick(fromEnv, "NERDBOX_LIBKRUN");
  }
  const candidates = searchPaths(env);
  const found = candidates.find(isFile);
  if (!found) throw new LibkrunNotFoundError(candidates, `no ${LIBKRUN_SONAME}`);
  return pick(found, "search");
}

const loaded = new Map<string, Libkrun>();

/** Locates and loads libkrun (with its libkrunfw); one instance per path and process. */
export function loadLibkrun(opts: LocateOptions = {}): Libkrun {
  const loc = locateLibkrun(opts);
  const cached = loaded.get(loc.path);
  if (cached) return cached;
  let lib: Libkrun;
  try {
    lib = new Libkrun(loc.path, loc.libkrunfw);
  } catch (e) {
    throw new Error(`cannot load ${loc.path} (found via ${loc.source}): ${(e as Error).message}`);
  }
  loaded.set(loc.path, lib);
  return lib;
}
