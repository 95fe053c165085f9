/** Interface addresses in CIDR notation (`192.168.127.2/24`, `fd00::2/64`). */
import type { Cidr } from "./types.ts";
import { FieldError } from "./field_error.ts";
import { formatIp, isMulticast, isUnspecified, parseIp } from "./ip.ts";

/** Prefix assumed for a bare IPv4 address. */
export const DEFAULT_PREFIX_V4 = 24;
/** Prefix assumed for a bare IPv6 address. */
export const DEFAULT_PREFIX_V6 = 64;

/** A parsed interface address, and whether its prefix was inferred from a bare address. */
export interface ParsedCidr {
  cidr: Cidr;
  inferred: boolean;
}

/**
 * Parses `ADDRESS/PREFIX` for an interface; a bare address gets /24 (IPv4) or /64 (IPv6) and
 * `inferred: true`. Throws FieldError for anything else, the unspecified or a multicast address.
 */
export function parseInterfaceCidr(text: string): ParsedCidr {
  const slash = text.indexOf("/");
  const addrText = slash < 0 ? text : text.slice(0, slash);
  let ip;
  try {
    ip = parseIp(addrText);
  } catch {
    throw new FieldError(
      "expected an address with prefix length, e.g. 192.168.127.2/24 or fd00::2/64",
    );
  }
  const max = ip.family === 4 ? 32 : 128;
  let prefix: number;
  if (slash < 0) {
    prefix = ip.family === 4 ? DEFAULT_PREFIX_V4 : DEFAULT_PREFIX_V6;
  } else {
    const p = text.slice(slash + 1);
    if (!/^(0|[1-9][0-9]{0,2})$/.test(p) || Number(p) > max) {
      throw new FieldError(
        `expected a prefix length from 0 to ${max} after '/', e.g. ${
          ip.family === 4 ? "192.168.127.2/24" : "fd00::2/64"
        }`,
      );
    }
    prefix = Number(p);
  }
  if (isUnspecified(ip)) {
    throw new FieldError("expected an interface address, got the unspecified address");
  }
  if (isMulticast(ip)) {
    throw new FieldError("expected a unicast interface address, got a multicast one");
  }
  return { cidr: { family: ip.family, address: formatIp(ip), prefix }, inferred: slash < 0 };
}

/** `address/prefix` text of a Cidr. */
export function formatCidr(c: Cidr): string {
  return `${c.address}/${c.prefix}`;
}
