/**
 * UNIX socket paths: the one owner of the `sun_path` limit. Provider sockets (annotations, --net)
 * and the sockets nerdbox makes in a state dir are checked here once and carried as SocketPath.
 */
import type { NetMode } from "./types.ts";
import { FieldError } from "./field_error.ts";

declare const socketBrand: unique symbol;
/** An absolute, NUL-free path that fits `sun_path`; made only by checkSocketPath / socketPath. */
export type SocketPath = string & { readonly [socketBrand]: "SocketPath" };

/** Usable bytes of `sun_path` (108 with the terminating NUL). */
export const SUN_PATH_MAX = 107;
/** What libkrun appends for its own end of a unixgram connection. */
export const KRUN_DGRAM_SUFFIX = "-krun.sock";

/**
 * Checks a provider socket path for `mode` (unixgram leaves room for libkrun's suffix); throws
 * FieldError (the caller names the field).
 */
export function checkSocketPath(path: string, mode: NetMode | undefined): SocketPath {
  if (typeof path !== "string" || !path.startsWith("/")) {
    throw new FieldError("expected an absolute path to the provider's UNIX socket");
  }
  if (path.includes("\0")) throw new FieldError("expected a path without NUL bytes");
  const bytes = new TextEncoder().encode(path).length;
  if (bytes > SUN_PATH_MAX) {
    throw new FieldError(
      `expected at most ${SUN_PATH_MAX} bytes (the size of sun_path), got ${bytes}`,
    );
  }
  const gramMax = SUN_PATH_MAX - KRUN_DGRAM_SUFFIX.length;
  if (mode === "unixgram" && bytes > gramMax) {
    throw new FieldError(
      `with mode=unixgram libkrun also binds "<socket>${KRUN_DGRAM_SUFFIX}", which must fit ` +
        `sun_path: expected at most ${gramMax} bytes, got ${bytes}`,
    );
  }
  return path as SocketPath;
}

/** True when `path` fits `sun_path` (at most SUN_PATH_MAX bytes, no NUL). */
export function fitsSunPath(path: string): boolean {
  return !path.includes("\0") && new TextEncoder().encode(path).length <= SUN_PATH_MAX;
}

/**
 * A socket path nerdbox makes itself (in a state dir): checked against `sun_path`; the Error
 * names `what`, the path and its length.
 */
export function socketPath(path: string, what: string): SocketPath {
  const n = new TextEncoder().encode(path).length;
  if (n > SUN_PATH_MAX || path.includes("\0")) {
    throw new Error(
      `${what} ${JSON.stringify(path)}: ${n} bytes; UNIX socket paths hold at most ${SUN_PATH_MAX}`,
    );
  }
  return path as SocketPath;
}
