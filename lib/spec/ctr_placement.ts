/**
 * Where ctr networks can sit: the guest hands the VM NIC itself to the container interface
 * (renamed, re-MACed, addresses and gateways added; docs/annotations.md), so each VM NIC takes at
 * most one, its name and MAC must not collide with the NICs that keep theirs, and the default
 * route of each address family is given by at most one of them.
 */
import type { CtrNetworkSpec, NetworkSpec, SpecError } from "./types.ts";

/** The guest name of the i-th VM NIC before any ctr network renames it. */
export function guestNicName(i: number): string {
  return `eth${i}`;
}

/**
 * Checks ctr networks against each other and the VM NICs they attach to (by vmmac); ctr
 * networks whose vmmac matches no NIC are skipped (checkCtrNetworks reports those).
 */
export function checkCtrPlacement(
  ctrs: CtrNetworkSpec[],
  networks: NetworkSpec[],
  ctrKey: (n: number) => string,
  netKey: (n: number) => string,
): SpecError[] {
  const errors: SpecError[] = [];
  const nicOf = (c: CtrNetworkSpec) => networks.findIndex((n) => n.mac === c.vmmac);
  const onNic = new Map<number, CtrNetworkSpec>();
  for (const c of ctrs) {
    const i = nicOf(c);
    if (i < 0) continue;
    const other = onNic.get(i);
    if (other) {
      errors.push({
        annotation: ctrKey(c.index),
        field: "vmmac",
        value: c.vmmac,
        message: `${netKey(networks[i].index)} already carries ${ctrKey(other.index)}: expected ` +
          `one container interface per VM NIC (the guest hands the NIC itself to it)`,
      });
    } else onNic.set(i, c);
  }
  // Names the guest keeps: lo and every NIC no ctr network renames.
  const kept = new Map<string, string>([["lo", "the loopback interface"]]);
  networks.forEach((n, i) => {
    if (!onNic.get(i)?.ifname) kept.set(guestNicName(i), `${netKey(n.index)}'s NIC`);
  });
  const gateways = new Map<number, CtrNetworkSpec>();
  for (const c of ctrs) {
    const i = nicOf(c);
    if (i < 0 || onNic.get(i) !== c) continue;
    if (c.ifname !== undefined && kept.has(c.ifname)) {
      errors.push({
        annotation: ctrKey(c.index),
        field: "ifname",
        value: c.ifname,
        message: `the guest already has ${c.ifname} (${kept.get(c.ifname)}): expected a name ` +
          `of its own, or a template such as ctr%d`,
      });
    }
    const sameMac = networks.findIndex((n, j) => j !== i && n.mac === c.mac);
    if (c.mac !== undefined && sameMac >= 0) {
      errors.push({
        annotation: ctrKey(c.index),
        field: "mac",
        value: c.mac,
        message: `the mac of ${netKey(networks[sameMac].index)}: expected a MAC of its own`,
      });
    }
    for (const gw of c.gateways) {
      const family = gw.includes(":") ? 6 : 4;
      const other = gateways.get(family);
      if (other && other !== c) {
        errors.push({
          annotation: ctrKey(c.index),
          field: "gw",
          value: gw,
          message: `${ctrKey(other.index)} already gives the IPv${family} default gateway: ` +
            `expected at most one gw per family across ctr networks`,
        });
      } else gateways.set(family, c);
    }
  }
  return errors;
}
