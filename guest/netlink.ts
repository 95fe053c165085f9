/**
 * rtnetlink message codec (pure, byte-exact): the requests the guest sends (link up/MTU, down,
 * rename, MAC, addresses, default route, dumps) and the replies it parses. The socket that sends
 * them is guest/rtnl.ts.
 */
import { type Cidr, formatIp, formatMac } from "./ip.ts";

/** Message types and flags (linux/netlink.h, linux/rtnetlink.h). */
export const RTM = {
  NEWLINK: 16,
  GETLINK: 18,
  NEWADDR: 20,
  DELADDR: 21,
  GETADDR: 22,
  NEWROUTE: 24,
  GETROUTE: 26,
} as const;
/** NLMSG_* control message types. */
export const NLMSG_ERROR = 2;
/** End of a dump. */
export const NLMSG_DONE = 3;
/** nlmsghdr flags. */
export const NLM_F = {
  REQUEST: 1,
  MULTI: 2,
  ACK: 4,
  DUMP: 0x300,
  REPLACE: 0x100,
  EXCL: 0x200,
  CREATE: 0x400,
} as const;
/** Attribute types used here. */
export const IFLA = { ADDRESS: 1, IFNAME: 3, MTU: 4 } as const;
/** ifaddrmsg attributes. */
export const IFA = { ADDRESS: 1, LOCAL: 2, BROADCAST: 4, CACHEINFO: 6, FLAGS: 8 } as const;
/** Address flags. */
export const IFA_F = { NODAD: 0x02, PERMANENT: 0x80 } as const;
/** rtmsg attributes. */
export const RTA = { DST: 1, OIF: 4, GATEWAY: 5, TABLE: 15 } as const;
/** IFF_UP. */
export const IFF_UP = 1;
const AF_INET = 2, AF_INET6 = 10;

/** One decoded netlink message. */
export interface NlMsg {
  type: number;
  flags: number;
  seq: number;
  pid: number;
  /** Body after the 16-byte header. */
  body: Uint8Array<ArrayBuffer>;
}

const align4 = (n: number) => (n + 3) & ~3;

/** Encodes one rtattr (type, data), padded to 4 bytes. */
export function attr(type: number, data: Uint8Array): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(align4(4 + data.length));
  const v = new DataView(out.buffer);
  v.setUint16(0, 4 + data.length, true);
  v.setUint16(2, type, true);
  out.set(data, 4);
  return out;
}

/** u32 little-endian (host order) bytes. */
export function u32(n: number): Uint8Array<ArrayBuffer> {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n >>> 0, true);
  return b;
}

/** The bytes of `parts`, one after the other. */
export function concat(parts: Uint8Array[]): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

/** Encodes a netlink message: 16-byte header, fixed body, attributes. */
export function encodeMsg(
  type: number,
  flags: number,
  seq: number,
  fixed: Uint8Array,
  attrs: Uint8Array[] = [],
): Uint8Array<ArrayBuffer> {
  const body = concat([fixed, ...attrs]);
  const out = new Uint8Array(16 + body.length);
  const v = new DataView(out.buffer);
  v.setUint32(0, out.length, true);
  v.setUint16(4, type, true);
  v.setUint16(6, flags, true);
  v.setUint32(8, seq, true);
  v.setUint32(12, 0, true);
  out.set(body, 16);
  return out;
}

/** Splits a receive buffer into messages. */
export function decodeMsgs(buf: Uint8Array): NlMsg[] {
  const out: NlMsg[] = [];
  let off = 0;
  while (buf.length - off >= 16) {
    const v = new DataView(buf.buffer, buf.byteOffset + off);
    const len = v.getUint32(0, true);
    if (len < 16 || off + len > buf.length) throw new Error(`truncated netlink message (${len})`);
    out.push({
      type: v.getUint16(4, true),
      flags: v.getUint16(6, true),
      seq: v.getUint32(8, true),
      pid: v.getUint32(12, true),
      body: buf.slice(off + 16, off + len),
    });
    off += align4(len);
  }
  return out;
}

/** Decodes the attributes that follow `fixedLen` bytes of a message body. */
export function decodeAttrs(body: Uint8Array, fixedLen: number): Map<number, Uint8Array> {
  const out = new Map<number, Uint8Array>();
  let off = fixedLen;
  while (body.length - off >= 4) {
    const v = new DataView(body.buffer, body.byteOffset + off);
    const len = v.getUint16(0, true);
    const type = v.getUint16(2, true) & 0x3fff;
    if (len < 4 || off + len > body.length) break;
    out.set(type, body.subarray(off + 4, off + len));
    off += align4(len);
  }
  return out;
}

/** ifinfomsg (16 bytes). */
export function ifinfomsg(index: number, flags = 0, change = 0): Uint8Array<ArrayBuffer> {
  const b = new Uint8Array(16);
  const v = new DataView(b.buffer);
  v.setInt32(4, index, true);
  v.setUint32(8, flags, true);
  v.setUint32(12, change, true);
  return b;
}

/** ifaddrmsg (8 bytes). */
export function ifaddrmsg(family: number, prefix: number, index: number): Uint8Array<ArrayBuffer> {
  const b = new Uint8Array(8);
  b[0] = family;
  b[1] = prefix;
  new DataView(b.buffer).setUint32(4, index, true);
  return b;
}

/** rtmsg (12 bytes) for a main-table unicast route. */
export function rtmsg(
  family: number,
  dstLen: number,
  protocol: number,
  flags = 0,
): Uint8Array<ArrayBuffer> {
  const b = new Uint8Array(12);
  b[0] = family;
  b[1] = dstLen;
  b[4] = 254; // RT_TABLE_MAIN
  b[5] = protocol;
  b[6] = 0; // RT_SCOPE_UNIVERSE
  b[7] = 1; // RTN_UNICAST
  new DataView(b.buffer).setUint32(8, flags, true);
  return b;
}

/** The request to set a link up (and optionally its MTU). */
export function linkUpMsg(seq: number, index: number, mtu?: number): Uint8Array<ArrayBuffer> {
  const attrs = mtu === undefined ? [] : [attr(IFLA.MTU, u32(mtu))];
  return encodeMsg(
    RTM.NEWLINK,
    NLM_F.REQUEST | NLM_F.ACK,
    seq,
    ifinfomsg(index, IFF_UP, IFF_UP),
    attrs,
  );
}

/** The request to set a link down (a rename or a MAC change needs it down). */
export function linkDownMsg(seq: number, index: number): Uint8Array<ArrayBuffer> {
  return encodeMsg(RTM.NEWLINK, NLM_F.REQUEST | NLM_F.ACK, seq, ifinfomsg(index, 0, IFF_UP));
}

/** The request to rename a link (IFLA_IFNAME, `%d` filled in by the kernel) and/or set its MAC. */
export function setLinkMsg(
  seq: number,
  index: number,
  change: { ifname?: string; mac?: Uint8Array },
): Uint8Array<ArrayBuffer> {
  const attrs: Uint8Array[] = [];
  if (change.ifname !== undefined) {
    attrs.push(attr(IFLA.IFNAME, new TextEncoder().encode(`${change.ifname}\0`)));
  }
  if (change.mac !== undefined) attrs.push(attr(IFLA.ADDRESS, change.mac));
  return encodeMsg(RTM.NEWLINK, NLM_F.REQUEST | NLM_F.ACK, seq, ifinfomsg(index), attrs);
}

/** Lifetimes for a non-permanent (DHCP) address, seconds. */
export interface AddrLifetime {
  preferred: number;
  valid: number;
}

/** The request to add (or replace) an address; permanent + nodad unless a lifetime is given. */
export function addAddrMsg(
  seq: number,
  index: number,
  cidr: Cidr,
  lifetime?: AddrLifetime,
): Uint8Array<ArrayBuffer> {
  const family = cidr.family === 4 ? AF_INET : AF_INET6;
  const attrs = [attr(IFA.LOCAL, cidr.addr), attr(IFA.ADDRESS, cidr.addr)];
  if (cidr.family === 4 && cidr.prefix < 31) {
    const brd = cidr.addr.slice();
    for (let bit = cidr.prefix; bit < 32; bit++) brd[bit >> 3] |= 0x80 >> (bit & 7);
    attrs.push(attr(IFA.BROADCAST, brd));
  }
  let flags: number = IFA_F.NODAD;
  if (lifetime) {
    const ci = new Uint8Array(16);
    const v = new DataView(ci.buffer);
    v.setUint32(0, lifetime.preferred >>> 0, true);
    v.setUint32(4, lifetime.valid >>> 0, true);
    attrs.push(attr(IFA.CACHEINFO, ci));
  } else {
    flags |= IFA_F.PERMANENT;
  }
  attrs.push(attr(IFA.FLAGS, u32(flags)));
  const msg = ifaddrmsg(family, cidr.prefix, index);
  msg[2] = flags & 0xff;
  return encodeMsg(
    RTM.NEWADDR,
    NLM_F.REQUEST | NLM_F.ACK | NLM_F.CREATE | NLM_F.REPLACE,
    seq,
    msg,
    attrs,
  );
}

/** The request to delete an address. */
export function delAddrMsg(seq: number, index: number, cidr: Cidr): Uint8Array<ArrayBuffer> {
  const family = cidr.family === 4 ? AF_INET : AF_INET6;
  return encodeMsg(
    RTM.DELADDR,
    NLM_F.REQUEST | NLM_F.ACK,
    seq,
    ifaddrmsg(family, cidr.prefix, index),
    [
      attr(IFA.LOCAL, cidr.addr),
    ],
  );
}

/** The request to add (or replace) the default route via `gateway` out of `index`. */
export function defaultRouteMsg(
  seq: number,
  index: number,
  gateway: Uint8Array,
  onlink: boolean,
  protocol = 3, // RTPROT_BOOT
): Uint8Array<ArrayBuffer> {
  const family = gateway.length === 4 ? AF_INET : AF_INET6;
  return encodeMsg(
    RTM.NEWROUTE,
    NLM_F.REQUEST | NLM_F.ACK | NLM_F.CREATE | NLM_F.REPLACE,
    seq,
    rtmsg(family, 0, protocol, onlink ? 4 : 0),
    [attr(RTA.GATEWAY, gateway), attr(RTA.OIF, u32(index))],
  );
}

/** A dump request (GETLINK/GETADDR/GETROUTE). */
export function dumpMsg(seq: number, type: number, family = 0): Uint8Array<ArrayBuffer> {
  const fixed = type === RTM.GETLINK
    ? ifinfomsg(0)
    : type === RTM.GETADDR
    ? ifaddrmsg(family, 0, 0)
    : rtmsg(family, 0, 0);
  if (type === RTM.GETLINK) fixed[0] = family;
  return encodeMsg(type, NLM_F.REQUEST | NLM_F.DUMP, seq, fixed);
}

/** A link as the kernel reports it. */
export interface Link {
  index: number;
  name: string;
  mac: string;
  mtu: number;
  up: boolean;
}

/** A kernel reply whose body is too short or malformed for its message type. */
export class NetlinkDecodeError extends Error {
  /** Creates the error for message `what`. */
  constructor(what: string, problem: string) {
    super(`malformed netlink ${what}: ${problem}`);
    this.name = "NetlinkDecodeError";
  }
}

/** ifinfomsg and ifaddrmsg sizes: the fixed part before the attributes. */
const IFINFOMSG_SIZE = 16;
const IFADDRMSG_SIZE = 8;

function atLeast(what: string, body: Uint8Array, size: number): DataView {
  if (body.length < size) {
    throw new NetlinkDecodeError(what, `body of ${body.length} bytes, expected at least ${size}`);
  }
  return new DataView(body.buffer, body.byteOffset, body.length);
}

/** A u32 attribute; absent is `fallback`, any length other than 4 is an error. */
function u32Attr(what: string, name: string, b: Uint8Array | undefined, fallback: number): number {
  if (!b) return fallback;
  if (b.length !== 4) {
    throw new NetlinkDecodeError(what, `${name} of ${b.length} bytes, expected 4`);
  }
  return new DataView(b.buffer, b.byteOffset, 4).getUint32(0, true);
}

/** Decodes an RTM_NEWLINK body; a NetlinkDecodeError when it is malformed. */
export function parseLink(body: Uint8Array): Link {
  const v = atLeast("RTM_NEWLINK", body, IFINFOMSG_SIZE);
  const a = decodeAttrs(body, IFINFOMSG_SIZE);
  const name = a.get(IFLA.IFNAME);
  const mac = a.get(IFLA.ADDRESS);
  return {
    index: v.getInt32(4, true),
    name: name
      ? new TextDecoder().decode(
        name.subarray(0, name.indexOf(0) < 0 ? name.length : name.indexOf(0)),
      )
      : "",
    mac: mac && mac.length === 6 ? formatMac(mac) : "",
    mtu: u32Attr("RTM_NEWLINK", "IFLA_MTU", a.get(IFLA.MTU), 0),
    up: (v.getUint32(8, true) & IFF_UP) !== 0,
  };
}

/** An address as the kernel reports it. */
export interface LinkAddr {
  index: number;
  cidr: string;
  flags: number;
}

/** Decodes an RTM_NEWADDR body; a NetlinkDecodeError when it is malformed. */
export function parseAddr(body: Uint8Array): LinkAddr {
  const what = "RTM_NEWADDR";
  const v = atLeast(what, body, IFADDRMSG_SIZE);
  const a = decodeAttrs(body, IFADDRMSG_SIZE);
  const ip = a.get(IFA.LOCAL) ?? a.get(IFA.ADDRESS) ?? new Uint8Array(4);
  if (ip.length !== 4 && ip.length !== 16) {
    throw new NetlinkDecodeError(what, `address of ${ip.length} bytes, expected 4 or 16`);
  }
  const prefix = body[1];
  if (prefix > ip.length * 8) {
    throw new NetlinkDecodeError(what, `prefix /${prefix} for a ${ip.length}-byte address`);
  }
  return {
    index: v.getUint32(4, true),
    cidr: `${formatIp(ip)}/${prefix}`,
    flags: u32Attr(what, "IFA_FLAGS", a.get(IFA.FLAGS), body[2]),
  };
}
