/**
 * Configures the guest's network from GuestConfig.networks over rtnetlink: finds each NIC by MAC,
 * renames and re-MACs those a ctr network asks for (while down), brings lo and the NICs up, adds
 * static addresses, runs DHCP where asked, installs the default route through the first
 * default-route network only (and an IPv6 one where `gateway6` says), and reports what it made.
 */
import type { GuestErrorKind, GuestNetworkReport } from "../lib/guest_protocol.ts";
import type { GuestNic } from "./config.ts";
import { DhcpClient, DhcpTimeoutError } from "./dhcp_client.ts";
import type { Lease } from "./dhcp.ts";
import { type Cidr, contains, formatIp, formatMac, parseIPv4 } from "./ip.ts";
import type { Link } from "./netlink.ts";
import { Rtnl } from "./rtnl.ts";

/** A setup failure with the GuestErrorKind it maps to. */
export class NetworkError extends Error {
  /** Creates the error of `kind`. */
  constructor(readonly kind: GuestErrorKind, message: string) {
    super(message);
    this.name = "NetworkError";
  }
}

/** What configureNetworks made: the report, the running DHCP clients, DHCP's DNS. */
export interface NetworkState {
  report: GuestNetworkReport;
  clients: DhcpClient[];
  dhcpNameservers: string[];
  dhcpDomains: string[];
  /** First IPv4 address of the first network (for /etc/hosts). */
  firstAddr?: string;
}

/** Options for configureNetworks. */
export interface NetworkOptions {
  hostname?: string;
  dhcpTimeoutMs: number;
  /** How long to wait for each MAC to appear. */
  macTimeoutMs?: number;
  log: (line: string) => void;
}

/** Polls the link list until every MAC is present; throws mac_not_found naming the missing ones. */
export async function findLinks(
  rtnl: Rtnl,
  macBytes: Uint8Array[],
  timeoutMs: number,
): Promise<Link[]> {
  const deadline = Date.now() + timeoutMs;
  const macs = macBytes.map(formatMac);
  for (;;) {
    const links = rtnl.links();
    const found = macs.map((m) => links.find((l) => l.mac === m));
    if (found.every((l) => l)) return found as Link[];
    if (Date.now() >= deadline) {
      const missing = macs.filter((_, i) => !found[i]);
      const seen = links.map((l) => `${l.name}=${l.mac}`).join(", ");
      throw new NetworkError(
        "mac_not_found",
        `no network interface with MAC ${
          missing.join(", ")
        } after ${timeoutMs} ms (present: ${seen})`,
      );
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * Gives NICs their container name and MAC (`ifname`, `setMac`: ctr.network) while they are down:
 * each NIC to be renamed first gets a temporary name, so that names may be passed between NICs,
 * then its own (`%d` filled in by the kernel). Returns `links` as they are now.
 */
export function renameLinks(rtnl: Rtnl, networks: GuestNic[], links: Link[]): Link[] {
  const changing = networks.flatMap((n, i) =>
    n.sent.ifname !== undefined || n.setMac !== undefined ? [{ n, l: links[i] }] : []
  );
  if (changing.length === 0) return links;
  for (const { n, l } of changing) {
    if (l.up) rtnl.linkDown(l.index);
    rtnl.setLink(l.index, {
      ...(n.sent.ifname !== undefined ? { ifname: `nbxtmp${l.index}` } : {}),
      ...(n.setMac !== undefined ? { mac: n.setMac } : {}),
    });
  }
  for (const { n, l } of changing) {
    if (n.sent.ifname !== undefined) rtnl.setLink(l.index, { ifname: n.sent.ifname });
  }
  const now = rtnl.links();
  return links.map((l) => now.find((x) => x.index === l.index) ?? l);
}

/** First host address of a static IPv4 subnet (the default gateway when none is given). */
export function firstHost(cidr: Cidr): Uint8Array<ArrayBuffer> {
  const out = cidr.addr.slice();
  for (let bit = cidr.prefix; bit < 32; bit++) out[bit >> 3] &= ~(0x80 >> (bit & 7));
  out[3] |= 1;
  return out;
}

function applyLease(rtnl: Rtnl, link: Link, net: GuestNic, lease: Lease): void {
  if (net.sent.mtu === undefined && lease.mtu !== undefined && lease.mtu >= 68) {
    rtnl.linkUp(link.index, lease.mtu);
  }
  const infinite = lease.leaseSecs === 0xffffffff;
  rtnl.addAddr(
    link.index,
    { family: 4, addr: parseIPv4(lease.ip), prefix: lease.prefix },
    infinite ? undefined : { preferred: lease.leaseSecs, valid: lease.leaseSecs },
  );
}

/** Configures every network; on failure releases what it took and throws NetworkError. */
export async function configureNetworks(
  networks: GuestNic[],
  opts: NetworkOptions,
): Promise<NetworkState> {
  const rtnl = new Rtnl();
  const clients: DhcpClient[] = [];
  const byNet: (DhcpClient | undefined)[] = [];
  try {
    const lo = rtnl.links().find((l) => l.name === "lo");
    if (lo) rtnl.linkUp(lo.index);
    const found = await findLinks(rtnl, networks.map((n) => n.mac), opts.macTimeoutMs ?? 2000);
    const links = renameLinks(rtnl, networks, found);
    const statics: Cidr[][] = networks.map((n) => n.addrs);
    networks.forEach((net, i) => {
      rtnl.linkUp(links[i].index, net.sent.mtu);
      for (const cidr of statics[i]) rtnl.addAddr(links[i].index, cidr);
    });
    // DHCP on every dhcp network at once.
    const leases = await Promise.all(networks.map(async (net, i) => {
      if (!net.sent.dhcp) return undefined;
      const client = new DhcpClient({
        ifindex: links[i].index,
        ifname: links[i].name,
        mac: net.setMac ?? net.mac,
        hostname: opts.hostname,
        timeoutMs: opts.dhcpTimeoutMs,
        log: opts.log,
      });
      clients.push(client);
      byNet[i] = client;
      const lease = await client.acquire();
      applyLease(rtnl, links[i], net, lease);
      return lease;
    }));
    // Default route: only through the first network that asks for it.
    let defaultGateway: string | undefined;
    const gi = networks.findIndex((n) => n.sent.defaultRoute);
    if (gi >= 0) {
      const net = networks[gi], lease = leases[gi];
      const v4 = statics[gi].find((s) => s.family === 4);
      // A given gateway4 (a ctr.network gw) wins over the lease's router.
      const fromLease = !net.gateway4 && lease?.routers[0] !== undefined;
      const gw = net.gateway4
        ? net.gateway4
        : fromLease
        ? parseIPv4(lease!.routers[0])
        : v4
        ? firstHost(v4)
        : undefined;
      if (gw) {
        const subnets = [...statics[gi]];
        if (lease) subnets.push({ family: 4, addr: parseIPv4(lease.ip), prefix: lease.prefix });
        const onlink = !subnets.some((s) => contains(s, gw));
        rtnl.defaultRoute(links[gi].index, gw, onlink, fromLease ? 16 /* RTPROT_DHCP */ : 3);
        defaultGateway = formatIp(gw);
      } else {
        opts.log(`network ${net.sent.mac}: default route requested but no IPv4 gateway known`);
      }
    }
    // IPv6 default route (ctr.network gw): through the NIC that names it.
    networks.forEach((net, i) => {
      const gw = net.gateway6;
      if (gw === undefined) return;
      rtnl.defaultRoute(links[i].index, gw, !statics[i].some((s) => contains(s, gw)));
    });
    // Renew in the background; the address lifetime follows the lease.
    networks.forEach((net, i) => {
      const dc = byNet[i];
      if (!dc || !leases[i]) return;
      dc.startRenewal(
        (l) => applyLease(rtnl, links[i], net, l),
        () => opts.log(`network ${net.sent.mac}: DHCP lease expired`),
      );
    });
    const report = buildReport(rtnl, links, defaultGateway);
    const first = report.interfaces[0]?.addrs.find((a) => !a.includes(":"));
    return {
      report,
      clients,
      dhcpNameservers: leases.flatMap((l) => l?.dns ?? []),
      dhcpDomains: leases.flatMap((l) => (l?.domain ? [l.domain] : [])),
      firstAddr: first?.split("/")[0],
    };
  } catch (err) {
    await Promise.all(clients.map((cl) => cl.close()));
    rtnl.close();
    if (err instanceof NetworkError) throw err;
    if (err instanceof DhcpTimeoutError) throw new NetworkError("dhcp_timeout", err.message);
    throw new NetworkError("netlink", err instanceof Error ? err.message : String(err));
  }
}

function buildReport(rtnl: Rtnl, links: Link[], defaultGateway?: string): GuestNetworkReport {
  const now = rtnl.links();
  const addrs = rtnl.addrs();
  return {
    interfaces: links.map((l) => ({
      name: l.name,
      mac: l.mac,
      addrs: addrs.filter((a) => a.index === l.index && !a.cidr.startsWith("fe80:")).map((a) =>
        a.cidr
      ),
      mtu: now.find((n) => n.index === l.index)?.mtu ?? l.mtu,
    })),
    ...(defaultGateway ? { defaultGateway } : {}),
    nameservers: [],
  };
}

/** Sends RELEASE for every lease and closes the clients. */
export async function releaseAll(clients: DhcpClient[]): Promise<void> {
  for (const cl of clients) {
    try {
      cl.release();
    } catch { /* the link may be gone already */ }
  }
  await Promise.all(clients.map((cl) => cl.close()));
}
