/** DNS domain names as resolv.conf takes them. */
import { FieldError } from "./field_error.ts";

const LABEL = /^[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$/;

/** Checks a domain name (labels of letters, digits, '-', '_'; ≤253 bytes; optional final dot). */
export function checkDomain(name: string): void {
  const bare = name.endsWith(".") ? name.slice(0, -1) : name;
  if (bare.length === 0 || bare.length > 253 || !bare.split(".").every((l) => LABEL.test(l))) {
    throw new FieldError(
      "expected a domain name such as example.com (dot-separated labels of letters, digits and " +
        "'-', at most 63 bytes each, 253 in all)",
    );
  }
}
