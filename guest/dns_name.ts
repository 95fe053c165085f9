/** Domain-name checks for values that arrive from the network (DHCP) before they reach /etc files. */

/** Longest domain name in text form (RFC 1035: 255 octets on the wire). */
export const MAX_DOMAIN_NAME = 253;

const LABEL = /^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;

/**
 * True for an LDH domain name: labels of 1–63 letters, digits and inner hyphens separated by
 * dots, at most 253 bytes in all (one trailing dot, the root, is accepted).
 */
export function isDomainName(name: string): boolean {
  const body = name.endsWith(".") ? name.slice(0, -1) : name;
  if (body.length === 0 || body.length > MAX_DOMAIN_NAME) return false;
  return body.split(".").every((label) => LABEL.test(label));
}
