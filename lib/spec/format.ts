/** Network specs back to annotation values: the inverse of parseNetworkValue. */
import type { NetworkSpec } from "./types.ts";
import { formatCsvRecord } from "./csv.ts";
import { formatCidr } from "./cidr.ts";
import { featureNames } from "./features.ts";

/** The canonical annotation value for `n`; parseNetworkValue of it gives `n` back. */
export function formatNetworkValue(n: NetworkSpec): string {
  const fields = [`socket=${n.socket}`, `mode=${n.mode}`, `mac=${n.mac}`];
  if (n.dhcp) fields.push("dhcp=true");
  for (const a of n.addrs) fields.push(`addr=${formatCidr(a)}`);
  if (n.features !== 0) fields.push(`features=${featureNames(n.features).join("|")}`);
  if (n.vfkit) fields.push("vfkit=true");
  if (n.vnetHdr) fields.push("vnet_hdr=true");
  return formatCsvRecord(fields);
}
