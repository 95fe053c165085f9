/**
 * DHCPv4 codec (RFC 2131/2132), byte-exact and pure: the BOOTP message with its options, and the
 * IPv4 + UDP wrapping the client sends and receives on an AF_PACKET socket.
 */
import { isDomainName } from "./dns_name.ts";
import { quote } from "./quote.ts";
import { formatIp, maskToPrefix } from "./ip.ts";

/** DHCP message types (option 53). */
export const DhcpType = {
  DISCOVER: 1,
  OFFER: 2,
  REQUEST: 3,
  DECLINE: 4,
  ACK: 5,
  NAK: 6,
  RELEASE: 7,
} as const;

/** Option codes used here. */
export const Opt = {
  PAD: 0,
  SUBNET: 1,
  ROUTER: 3,
  DNS: 6,
  HOSTNAME: 12,
  DOMAIN: 15,
  MTU: 26,
  REQUESTED_IP: 50,
  LEASE: 51,
  MSG_TYPE: 53,
  SERVER_ID: 54,
  PARAMS: 55,
  MAX_SIZE: 57,
  T1: 58,
  T2: 59,
  CLIENT_ID: 61,
  END: 255,
} as const;

/** Parameters the client asks for. */
export const REQUESTED_PARAMS = [
  Opt.SUBNET,
  Opt.ROUTER,
  Opt.DNS,
  Opt.DOMAIN,
  Opt.MTU,
  Opt.LEASE,
  Opt.T1,
  Opt.T2,
];

const MAGIC = [99, 130, 83, 99];
/** Offset of the options inside a BOOTP message (after the magic cookie). */
const OPTIONS_OFFSET = 240;
/** BOOTP's minimum message size; shorter messages are padded. */
const MIN_SIZE = 300;

/** A DHCP message in typed form. */
export interface DhcpMessage {
  op: 1 | 2;
  xid: number;
  secs: number;
  broadcast: boolean;
  ciaddr: Uint8Array;
  yiaddr: Uint8Array;
  siaddr: Uint8Array;
  chaddr: Uint8Array;
  /** Raw options by code (last occurrence wins; concatenated per RFC 3396). */
  options: Map<number, Uint8Array>;
}

const ZERO4 = new Uint8Array(4);

/** Encodes a BOOTP/DHCP message; options are written in insertion order, then END, then padding. */
export function encodeDhcp(m: DhcpMessage): Uint8Array<ArrayBuffer> {
  const opts: number[] = [];
  for (const [code, value] of m.options) {
    for (let off = 0; off < value.length || off === 0; off += 255) {
      const part = value.subarray(off, off + 255);
      opts.push(code, part.length, ...part);
      if (value.length === 0) break;
    }
  }
  opts.push(Opt.END);
  const out = new Uint8Array(Math.max(MIN_SIZE, OPTIONS_OFFSET + opts.length));
  const v = new DataView(out.buffer);
  out[0] = m.op;
  out[1] = 1; // Ethernet
  out[2] = 6;
  v.setUint32(4, m.xid >>> 0);
  v.setUint16(8, m.secs);
  v.setUint16(10, m.broadcast ? 0x8000 : 0);
  out.set(m.ciaddr, 12);
  out.set(m.yiaddr, 16);
  out.set(m.siaddr, 20);
  out.set(m.chaddr.subarray(0, 16), 28);
  out.set(MAGIC, 236);
  out.set(opts, OPTIONS_OFFSET);
  return out;
}

/** Decodes a BOOTP/DHCP message; throws on a short message or a bad magic cookie. */
export function decodeDhcp(b: Uint8Array): DhcpMessage {
  if (b.length < OPTIONS_OFFSET) throw new Error(`DHCP message too short (${b.length} bytes)`);
  if (MAGIC.some((x, i) => b[236 + i] !== x)) throw new Error("DHCP message without magic cookie");
  const v = new DataView(b.buffer, b.byteOffset, b.length);
  const options = new Map<number, Uint8Array>();
  let off = OPTIONS_OFFSET;
  while (off < b.length) {
    const code = b[off++];
    if (code === Opt.PAD) continue;
    if (code === Opt.END) break;
    if (off >= b.length) break;
    const len = b[off++];
    const value = b.slice(off, off + len);
    off += len;
    const prev = options.get(code);
    if (prev) {
      const joined = new Uint8Array(prev.length + value.length);
      joined.set(prev);
      joined.set(value, prev.length);
      options.set(code, joined);
    } else options.set(code, value);
  }
  const op = b[0];
  if (op !== 1 && op !== 2) throw new Error(`DHCP message with op ${op}`);
  return {
    op,
    xid: v.getUint32(4),
    secs: v.getUint16(8),
    broadcast: (v.getUint16(10) & 0x8000) !== 0,
    ciaddr: b.slice(12, 16),
    yiaddr: b.slice(16, 20),
    siaddr: b.slice(20, 24),
    chaddr: b.slice(28, 44),
    options,
  };
}

/** Inputs for a client message. */
export interface ClientMessage {
  type: number;
  xid: number;
  mac: Uint8Array;
  secs?: number;
  ciaddr?: Uint8Array;
  requestedIp?: Uint8Array;
  serverId?: Uint8Array;
  hostname?: string;
}

/** Builds a client message with client-id (type 1 + MAC) and the parameter request list. */
export function clientMessage(c: ClientMessage): DhcpMessage {
  const options = new Map<number, Uint8Array>();
  options.set(Opt.MSG_TYPE, Uint8Array.of(c.type));
  options.set(Opt.CLIENT_ID, Uint8Array.of(1, ...c.mac));
  if (c.requestedIp) options.set(Opt.REQUESTED_IP, c.requestedIp);
  if (c.serverId) options.set(Opt.SERVER_ID, c.serverId);
  if (c.type !== DhcpType.RELEASE) {
    options.set(Opt.MAX_SIZE, Uint8Array.of(0x05, 0xdc)); // 1500
    options.set(Opt.PARAMS, Uint8Array.from(REQUESTED_PARAMS));
    if (c.hostname) options.set(Opt.HOSTNAME, new TextEncoder().encode(c.hostname));
  }
  const chaddr = new Uint8Array(16);
  chaddr.set(c.mac.subarray(0, 6));
  return {
    op: 1,
    xid: c.xid,
    secs: c.secs ?? 0,
    broadcast: false,
    ciaddr: c.ciaddr ?? ZERO4,
    yiaddr: ZERO4,
    siaddr: ZERO4,
    chaddr,
    options,
  };
}

/** What a server offered or acknowledged, decoded. */
export interface Lease {
  type: number;
  ip: string;
  prefix: number;
  routers: string[];
  dns: string[];
  domain?: string;
  mtu?: number;
  /** Seconds; 0xffffffff = infinite. */
  leaseSecs: number;
  t1: number;
  t2: number;
  serverId: string;
  /** Options that were present but refused (not valid values), one line each for the log. */
  ignored?: string[];
}

const u32 = (b?: Uint8Array) =>
  b && b.length >= 4 ? new DataView(b.buffer, b.byteOffset).getUint32(0) : undefined;
const ips = (b?: Uint8Array) => {
  const out: string[] = [];
  for (let i = 0; b && i + 4 <= b.length; i += 4) out.push(formatIp(b.subarray(i, i + 4)));
  return out;
};

/**
 * Option 15 as a domain name, or a note saying why it was refused. The value comes from whatever
 * answers DHCP on the NIC and ends up in resolv.conf, so only an LDH name (≤253 bytes) is kept.
 */
function domainOf(raw: Uint8Array): { domain?: string; note?: string } {
  const text = new TextDecoder("utf-8", { fatal: false }).decode(raw).replace(/\0+$/, "");
  if (isDomainName(text)) return { domain: text };
  return {
    note: `ignored option 15 (domain) ${quote(text)}: expected a domain name ` +
      `(letters, digits and hyphens in dot-separated labels, at most 253 bytes)`,
  };
}

/**
 * Reads the lease fields from a server message (defaults: /24 by class if no mask, T1=½, T2=⅞).
 * Text options that are not valid values are left out and listed in `ignored`.
 */
export function leaseOf(m: DhcpMessage): Lease {
  const type = m.options.get(Opt.MSG_TYPE)?.[0] ?? 0;
  const mask = m.options.get(Opt.SUBNET);
  const leaseSecs = u32(m.options.get(Opt.LEASE)) ?? 3600;
  const mtuOpt = m.options.get(Opt.MTU);
  const domainOpt = m.options.get(Opt.DOMAIN);
  const { domain, note } = domainOpt ? domainOf(domainOpt) : {};
  const server = m.options.get(Opt.SERVER_ID);
  const lease: Lease = {
    type,
    ip: formatIp(m.yiaddr),
    prefix: mask && mask.length === 4 ? maskToPrefix(mask) : 24,
    routers: ips(m.options.get(Opt.ROUTER)),
    dns: ips(m.options.get(Opt.DNS)),
    domain,
    mtu: mtuOpt && mtuOpt.length === 2 ? (mtuOpt[0] << 8) | mtuOpt[1] : undefined,
    leaseSecs,
    t1: u32(m.options.get(Opt.T1)) ?? Math.floor(leaseSecs / 2),
    t2: u32(m.options.get(Opt.T2)) ?? Math.floor(leaseSecs * 7 / 8),
    serverId: server && server.length === 4 ? formatIp(server) : formatIp(m.siaddr),
  };
  if (note) lease.ignored = [note];
  return lease;
}

/** RFC 1071 ones' complement sum over `data`, starting from `sum`. */
function onesSum(data: Uint8Array, sum = 0): number {
  for (let i = 0; i + 1 < data.length; i += 2) sum += (data[i] << 8) | data[i + 1];
  if (data.length & 1) sum += data[data.length - 1] << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return sum;
}

/** Internet checksum of `data`. */
export function checksum(data: Uint8Array): number {
  return ~onesSum(data) & 0xffff;
}

/** Wraps a UDP payload in UDP and IPv4 headers (checksums filled in). */
export function ipUdp(
  src: Uint8Array,
  dst: Uint8Array,
  sport: number,
  dport: number,
  payload: Uint8Array,
): Uint8Array<ArrayBuffer> {
  const udpLen = 8 + payload.length;
  const out = new Uint8Array(20 + udpLen);
  const v = new DataView(out.buffer);
  out[0] = 0x45;
  out[1] = 0x10; // low delay, as DHCP clients do
  v.setUint16(2, out.length);
  out[8] = 64; // TTL
  out[9] = 17; // UDP
  out.set(src, 12);
  out.set(dst, 16);
  v.setUint16(10, checksum(out.subarray(0, 20)));
  v.setUint16(20, sport);
  v.setUint16(22, dport);
  v.setUint16(24, udpLen);
  out.set(payload, 28);
  const pseudo = new Uint8Array(12);
  pseudo.set(src, 0);
  pseudo.set(dst, 4);
  pseudo[9] = 17;
  new DataView(pseudo.buffer).setUint16(10, udpLen);
  const sum = ~onesSum(out.subarray(20), onesSum(pseudo)) & 0xffff;
  v.setUint16(26, sum === 0 ? 0xffff : sum);
  return out;
}

/** A received IPv4/UDP datagram. */
export interface UdpPacket {
  src: Uint8Array;
  dst: Uint8Array;
  sport: number;
  dport: number;
  payload: Uint8Array;
}

/** Unwraps an IPv4 packet carrying UDP; null for anything else or a bad IP header checksum. */
export function parseIpUdp(b: Uint8Array): UdpPacket | null {
  if (b.length < 28 || b[0] >> 4 !== 4) return null;
  const ihl = (b[0] & 0x0f) * 4;
  if (ihl < 20 || b.length < ihl + 8 || b[9] !== 17) return null;
  const v = new DataView(b.buffer, b.byteOffset, b.length);
  const total = v.getUint16(2);
  if (total > b.length || total < ihl + 8) return null;
  if ((v.getUint16(6) & 0x3fff) !== 0) return null; // fragments are not reassembled
  if (checksum(b.subarray(0, ihl)) !== 0) return null;
  const udpLen = v.getUint16(ihl + 4);
  if (udpLen < 8 || ihl + udpLen > total) return null;
  return {
    src: b.slice(12, 16),
    dst: b.slice(16, 20),
    sport: v.getUint16(ihl),
    dport: v.getUint16(ihl + 2),
    payload: b.slice(ihl + 8, ihl + udpLen),
  };
}
