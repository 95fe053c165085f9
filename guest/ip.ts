/** IPv4/IPv6 address and CIDR parsing for the guest (typed once, at the edge). */

/** A parsed address with its prefix length. */
export interface Cidr {
  family: 4 | 6;
  /** 4 or 16 bytes. */
  addr: Uint8Array<ArrayBuffer>;
  prefix: number;
}

/** Parses dotted-quad IPv4; throws naming the value. */
export function parseIPv4(s: string): Uint8Array<ArrayBuffer> {
  const parts = s.split(".");
  if (parts.length !== 4 || parts.some((p) => !/^\d{1,3}$/.test(p) || Number(p) > 255)) {
    throw new Error(`invalid IPv4 address "${s}": expected a.b.c.d`);
  }
  return new Uint8Array(parts.map(Number));
}

/** Parses an IPv6 address (with `::` compression, no zone); throws naming the value. */
export function parseIPv6(s: string): Uint8Array<ArrayBuffer> {
  const bad = () => new Error(`invalid IPv6 address "${s}"`);
  const halves = s.split("::");
  if (halves.length > 2) throw bad();
  const groups = (h: string) => (h === "" ? [] : h.split(":"));
  const head = groups(halves[0]);
  const tail = halves.length === 2 ? groups(halves[1]) : [];
  const missing = 8 - head.length - tail.length;
  if (
    (halves.length === 1 && missing !== 0) || missing < 0 || (halves.length === 2 && missing < 1)
  ) {
    throw bad();
  }
  const all = [...head, ...Array(halves.length === 2 ? missing : 0).fill("0"), ...tail];
  const out = new Uint8Array(16);
  all.forEach((g, i) => {
    if (!/^[0-9a-fA-F]{1,4}$/.test(g)) throw bad();
    const v = parseInt(g, 16);
    out[i * 2] = v >> 8;
    out[i * 2 + 1] = v & 0xff;
  });
  return out;
}

/** Parses `addr/prefix` (IPv4 or IPv6); throws naming the value and what was expected. */
export function parseCidr(s: string): Cidr {
  const m = s.match(/^([^/]+)\/(\d{1,3})$/);
  if (!m) throw new Error(`invalid CIDR "${s}": expected ADDRESS/PREFIX`);
  const family = m[1].includes(":") ? 6 : 4;
  const addr = family === 4 ? parseIPv4(m[1]) : parseIPv6(m[1]);
  const prefix = Number(m[2]);
  if (prefix > addr.length * 8) {
    throw new Error(`invalid CIDR "${s}": prefix ${prefix} exceeds ${addr.length * 8}`);
  }
  return { family, addr, prefix };
}

/** Formats 4 or 16 address bytes. */
export function formatIp(b: Uint8Array): string {
  if (b.length === 4) return Array.from(b).join(".");
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((b[i] << 8) | b[i + 1]).toString(16));
  // Compress the longest run of zero groups (RFC 5952).
  let best = -1, bestLen = 0;
  for (let i = 0; i < 8;) {
    if (groups[i] !== "0") {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === "0") j++;
    if (j - i > bestLen && j - i > 1) [best, bestLen] = [i, j - i];
    i = j;
  }
  if (best < 0) return groups.join(":");
  return `${groups.slice(0, best).join(":")}::${groups.slice(best + bestLen).join(":")}`;
}

/** Netmask bytes (IPv4) → prefix length. */
export function maskToPrefix(mask: Uint8Array): number {
  let n = 0;
  for (const byte of mask) {
    for (let bit = 7; bit >= 0; bit--) {
      if (byte & (1 << bit)) n++;
      else return n;
    }
  }
  return n;
}

/** True when `ip` lies inside `net`. */
export function contains(net: Cidr, ip: Uint8Array): boolean {
  if (ip.length !== net.addr.length) return false;
  for (let bit = 0; bit < net.prefix; bit++) {
    const i = bit >> 3, m = 0x80 >> (bit & 7);
    if ((ip[i] & m) !== (net.addr[i] & m)) return false;
  }
  return true;
}

/** Parses `aa:bb:cc:dd:ee:ff` to 6 bytes; throws naming the value. */
export function parseMac(s: string): Uint8Array<ArrayBuffer> {
  if (!/^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/.test(s)) {
    throw new Error(`invalid MAC "${s}": expected aa:bb:cc:dd:ee:ff`);
  }
  return new Uint8Array(s.split(":").map((h) => parseInt(h, 16)));
}

/** Formats 6 MAC bytes lower-case. */
export function formatMac(b: Uint8Array): string {
  return Array.from(b.subarray(0, 6), (x) => x.toString(16).padStart(2, "0")).join(":");
}
