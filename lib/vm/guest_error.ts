/**
 * How a guest ERROR frame (lib/guest_protocol.ts) reaches the operator: the VmExit of a failed
 * workload setup, the GuestExecError of a process the guest could not start, and the escaping of
 * guest-supplied text on the way.
 */
import { GUEST_EXIT, type GuestError } from "../guest_protocol.ts";
import type { VmExit } from "./types.ts";

/** Escapes control characters in guest-supplied text (it ends up on the operator's terminal). */
export function printable(text: unknown): string {
  return String(text).replace(
    // deno-lint-ignore no-control-regex
    /[\u0000-\u0008\u000a-\u001f\u007f-\u009f]/g,
    (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`,
  );
}

/** Maps a guest ERROR payload to the VmExit nerdbox reports (distinct status per kind). */
export function guestErrorExit(err: GuestError): VmExit {
  const known = typeof err.kind === "string" && Object.hasOwn(GUEST_EXIT, err.kind);
  const code = Number.isInteger(err.code) && err.code! >= 0 && err.code! <= 255
    ? err.code!
    : known
    ? GUEST_EXIT[err.kind]
    : 125;
  return { code, error: `guest init: ${printable(err.kind)}: ${printable(err.message)}` };
}

/** Thrown by `GuestChannel.exec` when the guest could not start the process (ERROR frame). */
export class GuestExecError extends Error {
  /** The status the guest reported (127: not found, 126: not executable). */
  readonly code: number;
  /** The guest's error kind (`exec`, or `config` for a process it refused). */
  readonly kind: string;

  /** Builds the error from the guest's report. */
  constructor(kind: string, message: string, code: number) {
    super(message);
    this.name = "GuestExecError";
    this.kind = kind;
    this.code = code;
  }
}
