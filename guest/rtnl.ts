/**
 * A small NETLINK_ROUTE socket with the ops the guest needs: list links, set link up/MTU, down,
 * rename, set its MAC, add addresses, add the default route, list addresses. The messages are
 * guest/netlink.ts.
 */
import * as c from "./libc.ts";
import { type Cidr, formatIp, formatMac } from "./ip.ts";
import {
  addAddrMsg,
  type AddrLifetime,
  decodeMsgs,
  defaultRouteMsg,
  delAddrMsg,
  dumpMsg,
  type Link,
  type LinkAddr,
  linkDownMsg,
  linkUpMsg,
  NetlinkDecodeError,
  type NlMsg,
  NLMSG_DONE,
  NLMSG_ERROR,
  parseAddr,
  parseLink,
  RTM,
  setLinkMsg,
} from "./netlink.ts";

const AF_NETLINK = 16;

/** A NETLINK_ROUTE socket doing synchronous request/ack (the kernel answers at once). */
export class Rtnl {
  #fd: number;
  #seq = 1;
  #buf = new Uint8Array(1 << 16);

  /** Opens and binds the socket. */
  constructor() {
    this.#fd = c.socket(AF_NETLINK, 3 /* SOCK_RAW */ | 0o2000000, 0 /* NETLINK_ROUTE */);
    try {
      const sa = new Uint8Array(12);
      new DataView(sa.buffer).setUint16(0, AF_NETLINK, true);
      c.bind(this.#fd, sa);
      c.setRecvTimeout(this.#fd, 2000);
    } catch (err) {
      c.close(this.#fd);
      throw err;
    }
  }

  /** Closes the socket. */
  close(): void {
    c.close(this.#fd);
  }

  /** Next sequence number. */
  nextSeq(): number {
    return this.#seq++;
  }

  /** Sends a request and returns the replies until ACK/DONE; throws on a netlink error. */
  request(msg: Uint8Array<ArrayBuffer>, what: string): NlMsg[] {
    const seq = new DataView(msg.buffer).getUint32(8, true);
    c.sendto(this.#fd, msg);
    const out: NlMsg[] = [];
    for (;;) {
      const n = c.recv(this.#fd, this.#buf);
      if (n < 0) throw new Error(`netlink ${what}: no answer from the kernel (errno ${-n})`);
      for (const m of decodeMsgs(this.#buf.subarray(0, n))) {
        if (m.seq !== seq) continue;
        if (m.type === NLMSG_ERROR) {
          if (m.body.length < 4) {
            throw new NetlinkDecodeError("NLMSG_ERROR", `body of ${m.body.length} bytes`);
          }
          const code = new DataView(m.body.buffer, m.body.byteOffset, 4).getInt32(0, true);
          if (code === 0) return out;
          throw new c.Errno(`netlink ${what}`, -code);
        }
        if (m.type === NLMSG_DONE) return out;
        out.push(m);
      }
    }
  }

  /** All links. */
  links(): Link[] {
    return this.request(dumpMsg(this.nextSeq(), RTM.GETLINK), "GETLINK")
      .filter((m) => m.type === RTM.NEWLINK)
      .map((m) => parseLink(m.body));
  }

  /** All addresses (both families). */
  addrs(): LinkAddr[] {
    return this.request(dumpMsg(this.nextSeq(), RTM.GETADDR), "GETADDR")
      .filter((m) => m.type === RTM.NEWADDR)
      .map((m) => parseAddr(m.body));
  }

  /** Sets a link up, with an MTU when given. */
  linkUp(index: number, mtu?: number): void {
    this.request(linkUpMsg(this.nextSeq(), index, mtu), `set link ${index} up`);
  }

  /** Sets a link down. */
  linkDown(index: number): void {
    this.request(linkDownMsg(this.nextSeq(), index), `set link ${index} down`);
  }

  /** Renames a link and/or sets its MAC (the link must be down). */
  setLink(index: number, change: { ifname?: string; mac?: Uint8Array }): void {
    const what = [
      change.ifname !== undefined ? `name ${JSON.stringify(change.ifname)}` : "",
      change.mac !== undefined ? `mac ${formatMac(change.mac)}` : "",
    ].filter((x) => x).join(" ");
    this.request(setLinkMsg(this.nextSeq(), index, change), `set link ${index} ${what}`);
  }

  /** Adds or replaces an address. */
  addAddr(index: number, cidr: Cidr, lifetime?: AddrLifetime): void {
    this.request(
      addAddrMsg(this.nextSeq(), index, cidr, lifetime),
      `add address ${formatIp(cidr.addr)}/${cidr.prefix}`,
    );
  }

  /** Deletes an address. */
  delAddr(index: number, cidr: Cidr): void {
    this.request(delAddrMsg(this.nextSeq(), index, cidr), `delete address ${formatIp(cidr.addr)}`);
  }

  /** Adds or replaces the default route. */
  defaultRoute(index: number, gateway: Uint8Array, onlink: boolean, protocol?: number): void {
    this.request(
      defaultRouteMsg(this.nextSeq(), index, gateway, onlink, protocol),
      `add default route via ${formatIp(gateway)}`,
    );
  }
}
