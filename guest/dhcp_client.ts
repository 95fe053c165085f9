/**
 * DHCPv4 client on an AF_PACKET (SOCK_DGRAM, ETH_P_IP) socket bound to one interface:
 * DISCOVER/OFFER/REQUEST/ACK with the NIC's MAC as chaddr and client-id, renewal at T1
 * (unicast), rebinding at T2 (broadcast), RELEASE on shutdown.
 */
import * as c from "./libc.ts";
import {
  clientMessage,
  decodeDhcp,
  DhcpType,
  encodeDhcp,
  ipUdp,
  type Lease,
  leaseOf,
  parseIpUdp,
} from "./dhcp.ts";
import { parseIPv4 } from "./ip.ts";

const AF_PACKET = 17;
const ETH_P_IP = 0x0800;
const BROADCAST_MAC = new Uint8Array(6).fill(0xff);
const BROADCAST_IP = Uint8Array.of(255, 255, 255, 255);
const ANY_IP = new Uint8Array(4);

/** DHCP did not produce a lease within the configured time. */
export class DhcpTimeoutError extends Error {
  /** Creates the error for interface `ifname` after `ms` milliseconds. */
  constructor(ifname: string, ms: number, detail: string) {
    super(`DHCP on ${ifname}: no lease within ${ms} ms (${detail})`);
    this.name = "DhcpTimeoutError";
  }
}

/** What the client needs to know about its interface. */
export interface DhcpClientOptions {
  ifindex: number;
  ifname: string;
  mac: Uint8Array;
  hostname?: string;
  timeoutMs: number;
  log?: (line: string) => void;
}

function sockaddrLl(ifindex: number, mac: Uint8Array = new Uint8Array(6)): Uint8Array<ArrayBuffer> {
  const sa = new Uint8Array(20);
  const v = new DataView(sa.buffer);
  v.setUint16(0, AF_PACKET, true);
  v.setUint16(2, ETH_P_IP); // network order
  v.setInt32(4, ifindex, true);
  sa[11] = 6;
  sa.set(mac.subarray(0, 6), 12);
  return sa;
}

/** A DHCP client holding one lease on one interface. */
export class DhcpClient {
  #fd: number;
  #opts: DhcpClientOptions;
  #started = Date.now();
  #timer?: ReturnType<typeof setTimeout>;
  #closed = false;
  #serverMac: Uint8Array = BROADCAST_MAC;
  /** The current lease (set once acquire() succeeds). */
  lease?: Lease;
  /** When the current lease was obtained (ms since epoch). */
  leasedAt = 0;

  /** Opens the packet socket on the interface. */
  constructor(opts: DhcpClientOptions) {
    this.#opts = opts;
    this.#fd = c.socket(AF_PACKET, 2 /* SOCK_DGRAM */ | c.O.CLOEXEC, 0x0008 /* htons(ETH_P_IP) */);
    try {
      c.bind(this.#fd, sockaddrLl(opts.ifindex));
      c.setRecvTimeout(this.#fd, 200);
    } catch (err) {
      c.close(this.#fd);
      throw err;
    }
  }

  #log(line: string): void {
    this.#opts.log?.(`dhcp ${this.#opts.ifname}: ${line}`);
  }

  #send(type: number, xid: number, extra: Partial<Parameters<typeof clientMessage>[0]>, unicast?: {
    src: Uint8Array;
    dst: Uint8Array;
  }): void {
    const msg = clientMessage({
      type,
      xid,
      mac: this.#opts.mac,
      hostname: this.#opts.hostname,
      secs: Math.min(0xffff, Math.floor((Date.now() - this.#started) / 1000)),
      ...extra,
    });
    const packet = ipUdp(
      unicast?.src ?? ANY_IP,
      unicast?.dst ?? BROADCAST_IP,
      68,
      67,
      encodeDhcp(msg),
    );
    const dest = sockaddrLl(this.#opts.ifindex, unicast ? this.#serverMac : BROADCAST_MAC);
    c.sendto(this.#fd, packet, dest);
  }

  /** Waits for a server message with `xid` of one of `types` until `deadline`; null on timeout. */
  async #receive(xid: number, types: number[], deadline: number): Promise<Lease | null> {
    const buf = new Uint8Array(2048);
    const from = new Uint8Array(20);
    while (Date.now() < deadline && !this.#closed) {
      const n = await c.recvfromAsync(this.#fd, buf, from);
      if (n <= 0) continue;
      const udp = parseIpUdp(buf.subarray(0, n));
      if (!udp || udp.dport !== 68 || udp.sport !== 67) continue;
      let lease: Lease;
      try {
        const msg = decodeDhcp(udp.payload);
        if (msg.op !== 2 || msg.xid !== xid) continue;
        if (msg.chaddr.subarray(0, 6).some((b, i) => b !== this.#opts.mac[i])) continue;
        lease = leaseOf(msg);
      } catch {
        continue;
      }
      if (!types.includes(lease.type)) continue;
      if (lease.type !== DhcpType.NAK) this.#serverMac = from.slice(12, 18);
      return lease;
    }
    return null;
  }

  /** Runs DISCOVER/OFFER/REQUEST/ACK until a lease or the timeout (DhcpTimeoutError). */
  async acquire(): Promise<Lease> {
    const deadline = Date.now() + this.#opts.timeoutMs;
    let stage = "no OFFER";
    while (Date.now() < deadline) {
      const xid = crypto.getRandomValues(new Uint32Array(1))[0];
      let offer: Lease | null = null;
      for (let wait = 1000; !offer && Date.now() < deadline; wait = Math.min(wait * 2, 4000)) {
        this.#send(DhcpType.DISCOVER, xid, {});
        offer = await this.#receive(xid, [DhcpType.OFFER], Math.min(deadline, Date.now() + wait));
      }
      if (!offer) break;
      stage = `OFFER of ${offer.ip} from ${offer.serverId}, no ACK`;
      this.#log(`offer ${offer.ip}/${offer.prefix} from ${offer.serverId}`);
      let ack: Lease | null = null;
      for (let i = 0; i < 3 && !ack && Date.now() < deadline; i++) {
        this.#send(DhcpType.REQUEST, xid, {
          requestedIp: parseIPv4(offer.ip),
          serverId: parseIPv4(offer.serverId),
        });
        ack = await this.#receive(
          xid,
          [DhcpType.ACK, DhcpType.NAK],
          Math.min(deadline, Date.now() + 1000),
        );
      }
      if (ack?.type === DhcpType.ACK) {
        this.lease = ack;
        this.leasedAt = Date.now();
        this.#log(`bound ${ack.ip}/${ack.prefix} lease ${ack.leaseSecs}s`);
        for (const note of ack.ignored ?? []) this.#log(note);
        return ack;
      }
      if (ack) {
        stage = `NAK from ${ack.serverId}`;
        this.#log(stage);
      }
    }
    throw new DhcpTimeoutError(this.#opts.ifname, this.#opts.timeoutMs, stage);
  }

  /** One renewal (unicast to the server) or rebinding (broadcast) attempt; the new lease or null. */
  async renew(rebind = false): Promise<Lease | null> {
    const cur = this.lease;
    if (!cur) throw new Error("renew() before a lease was acquired");
    const xid = crypto.getRandomValues(new Uint32Array(1))[0];
    const ciaddr = parseIPv4(cur.ip);
    this.#send(
      DhcpType.REQUEST,
      xid,
      { ciaddr },
      rebind ? undefined : { src: ciaddr, dst: parseIPv4(cur.serverId) },
    );
    const ack = await this.#receive(xid, [DhcpType.ACK, DhcpType.NAK], Date.now() + 2000);
    if (ack?.type !== DhcpType.ACK) return null;
    this.lease = ack;
    this.leasedAt = Date.now();
    this.#log(`renewed ${ack.ip} lease ${ack.leaseSecs}s`);
    for (const note of ack.ignored ?? []) this.#log(note);
    return ack;
  }

  /**
   * Renews in the background: at T1 (unicast), retried until T2, then rebinding (broadcast)
   * until the lease ends. `onLease` runs after every ACK; `onExpired` when the lease ran out.
   */
  startRenewal(onLease: (lease: Lease) => void, onExpired: () => void): void {
    const schedule = () => {
      const lease = this.lease;
      if (!lease || this.#closed || lease.leaseSecs === 0xffffffff) return;
      const elapsed = (Date.now() - this.leasedAt) / 1000;
      const next = elapsed < lease.t1
        ? lease.t1
        : elapsed < lease.leaseSecs
        ? elapsed + Math.max(1, (lease.t2 - elapsed) / 2)
        : -1;
      if (next < 0) {
        this.#log(`lease on ${lease.ip} expired`);
        onExpired();
        return;
      }
      const timer = setTimeout(async () => {
        this.#timer = undefined;
        if (this.#closed) return;
        const since = (Date.now() - this.leasedAt) / 1000;
        const got = await this.renew(since >= lease.t2).catch(() => null);
        if (got) onLease(got);
        schedule();
      }, Math.max(0, (next - elapsed) * 1000));
      this.#timer = timer;
      Deno.unrefTimer(timer);
    };
    schedule();
  }

  /** Sends RELEASE for the current lease (unicast to the server). */
  release(): void {
    const cur = this.lease;
    if (!cur || this.#closed) return;
    const ciaddr = parseIPv4(cur.ip);
    this.#send(DhcpType.RELEASE, crypto.getRandomValues(new Uint32Array(1))[0], {
      ciaddr,
      serverId: parseIPv4(cur.serverId),
    }, { src: ciaddr, dst: parseIPv4(cur.serverId) });
    this.#log(`released ${cur.ip}`);
  }

  /** Stops renewal and closes the socket (after any receive in flight has timed out). */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    await new Promise((r) => setTimeout(r, 250)); // a receive in flight ends within SO_RCVTIMEO
    c.close(this.#fd);
  }
}
