/** Hostnames for the guest (RFC 1123, at most 64 bytes as Linux allows). */
import { FieldError } from "./field_error.ts";

const LABEL = /^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;

/** Checks a hostname; throws FieldError saying what is expected. */
export function checkHostname(name: string): void {
  if (name.length === 0 || name.length > 64 || !name.split(".").every((l) => LABEL.test(l))) {
    throw new FieldError(
      "expected a hostname of at most 64 bytes: dot-separated labels of letters, digits and '-'",
    );
  }
}
