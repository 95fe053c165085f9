/**
 * `io.containerd.nerdbox.ctr.network.N` in the plan: each becomes the VM NIC whose MAC is its
 * vmmac, as the container sees it (docs/annotations.md). Precedence with that NIC's own settings:
 * the ctr addresses are added to the network's (static or DHCP), an IPv4 `gw` replaces the default
 * route the first network would install (DHCP router or static gateway alike), an IPv6 `gw` adds
 * the IPv6 default route. Without a NIC (TSI, the private passt or the pod interface, which are no
 * `network.N`) there is nothing to sit on: an error naming the annotation.
 */
import type { CtrNetworkSpec, SpecError } from "../spec/types.ts";
import type { GuestNetwork } from "../guest_protocol.ts";

/** What the planning needs of the plan's network (a NetworkPlan; kept structural: no cycle). */
export interface NicsOf {
  kind: string;
  nics?: Array<{ mac: string }>;
}

const ctrKey = (n: number) => `io.containerd.nerdbox.ctr.network.${n}`;

/** One container interface as the plan decided it: which NIC, and what the guest does to it. */
export interface CtrNicPlan {
  /** The annotation it came from. */
  annotation: string;
  /** Position in the plan's NICs of the NIC it is (its vmmac). */
  nic: number;
  /** New interface name (`%d` filled in by the guest kernel); absent = the NIC keeps its own. */
  ifname?: string;
  /** New MAC; absent = the NIC keeps its vmmac. */
  mac?: string;
  /** CIDRs added to the NIC's own addresses. */
  addrs: string[];
  /** IPv4 default gateway through this NIC (replaces the first network's default route). */
  gateway4?: string;
  /** IPv6 default gateway through this NIC. */
  gateway6?: string;
}

/**
 * Plans the ctr networks onto `network`'s NICs; problems go to `errors` (the annotation named).
 * The annotation checks (lib/spec/ctr_placement.ts) already refused what the guest could not do;
 * these are repeated here only where a plan would otherwise be wrong.
 */
export function planCtrNetworks(
  ctrs: CtrNetworkSpec[],
  network: NicsOf,
  errors: SpecError[],
): CtrNicPlan[] {
  const out: CtrNicPlan[] = [];
  for (const c of ctrs) {
    const annotation = ctrKey(c.index);
    if (network.kind !== "nics" || !network.nics) {
      errors.push({
        annotation,
        field: "vmmac",
        value: c.vmmac,
        message: "the VM has no NIC to put this container interface on (no network.N or --net: " +
          "TSI under libkrun, a private passt or the pod interface under QEMU): expected the " +
          "mac of an attached io.containerd.nerdbox.network.N",
      });
      continue;
    }
    const nic = network.nics.findIndex((n) => n.mac === c.vmmac);
    if (nic < 0 || out.some((p) => p.nic === nic)) {
      errors.push({
        annotation,
        field: "vmmac",
        value: c.vmmac,
        message: nic < 0
          ? `matches no attached NIC: expected one of ${network.nics.map((n) => n.mac).join(", ")}`
          : "another ctr network is on that NIC already: expected one per VM NIC",
      });
      continue;
    }
    const gateway4 = c.gateways.find((g) => !g.includes(":"));
    const gateway6 = c.gateways.find((g) => g.includes(":"));
    out.push({
      annotation,
      nic,
      ...(c.ifname !== undefined ? { ifname: c.ifname } : {}),
      ...(c.mac !== undefined && c.mac !== c.vmmac ? { mac: c.mac } : {}),
      addrs: c.addrs.map((a) => `${a.address}/${a.prefix}`),
      ...(gateway4 ? { gateway4 } : {}),
      ...(gateway6 ? { gateway6 } : {}),
    });
  }
  return out;
}

/** The guest's NIC list with the planned ctr networks applied (inputs are not modified). */
export function withCtrNetworks(
  networks: GuestNetwork[],
  ctrs: CtrNicPlan[] | undefined,
): GuestNetwork[] {
  const out = networks.map((n) => ({ ...n, addrs: [...n.addrs] }));
  for (const c of ctrs ?? []) {
    const g = out[c.nic];
    if (!g) throw new Error(`${c.annotation}: planned on NIC #${c.nic}, which the VM lacks`);
    if (c.ifname !== undefined) g.ifname = c.ifname;
    if (c.mac !== undefined) g.setMac = c.mac;
    for (const a of c.addrs) if (!g.addrs.includes(a)) g.addrs.push(a);
    if (c.gateway4 !== undefined) {
      for (const o of out) {
        o.defaultRoute = false;
        delete o.gateway4;
      }
      g.defaultRoute = true;
      g.gateway4 = c.gateway4;
    }
    if (c.gateway6 !== undefined) g.gateway6 = c.gateway6;
  }
  return out;
}
