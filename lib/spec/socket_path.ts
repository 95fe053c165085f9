/** Provider socket paths: absolute, NUL-free, and short enough for `sockaddr_un.sun_path`. */
import type { NetMode } from "./types.ts";
import { FieldError } from "./field_error.ts";

/** Usable bytes of `sun_path` (108 with the terminating NUL). */
export const SUN_PATH_MAX = 107;
/** What libkrun appends for its own end of a unixgram connection. */
export const KRUN_DGRAM_SUFFIX = "-krun.sock";

/** Checks a provider socket path for `mode` (unixgram leaves room for libkrun's suffix). */
export function checkSocketPath(path: string, mode: NetMode | undefined): void {
  if (!path.startsWith("/")) {
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
}
