/** The value of `io.containerd.nerdbox.ctr.network.N`: a container interface inside the VM. */
import type { Cidr, CtrNetworkSpec, SpecError } from "./types.ts";
import { fieldChecks, parseKeyValueRecord } from "./kv.ts";
import { parseMac } from "./mac.ts";
import { formatCidr, parseInterfaceCidr } from "./cidr.ts";
import { checkIfname } from "./ifname.ts";
import { formatIp, isMulticast, isUnspecified, parseIp, samePrefix } from "./ip.ts";

/** Every key of a ctr network value. */
export const CTR_NETWORK_KEYS = ["vmmac", "mac", "addr", "ifname", "gw"] as const;

/** The result of parsing one ctr network value. */
export interface ParsedCtrNetwork {
  ctrNetwork?: CtrNetworkSpec;
  warnings: string[];
  errors: SpecError[];
}

/**
 * Parses one ctr network value. `vmmac` is required and checked for shape here; whether it
 * matches a VM network is checked by parseAnnotations, which knows all of them.
 */
export function parseCtrNetworkValue(
  value: string,
  annotation: string,
  index: number,
): ParsedCtrNetwork {
  const warnings: string[] = [];
  const record = parseKeyValueRecord(value, annotation, CTR_NETWORK_KEYS, [
    "addr",
    "gw",
  ]);
  const { fields, errors, malformed } = record;
  const { get, err, check } = fieldChecks(record, annotation);

  const vmmacText = get("vmmac");
  if (!malformed && vmmacText === undefined && !errors.some((e) => e.field === "vmmac")) {
    err("vmmac", "", "missing required key: expected vmmac=<the mac of a VM network>");
  }
  const vmmac = vmmacText === undefined
    ? undefined
    : check("vmmac", vmmacText, () => parseMac(vmmacText));
  const macText = get("mac");
  const mac = macText === undefined ? undefined : check("mac", macText, () => parseMac(macText));
  const ifname = get("ifname");
  if (ifname !== undefined) check("ifname", ifname, () => checkIfname(ifname));

  const addrs: Cidr[] = [];
  for (const f of fields.filter((f) => f.key === "addr")) {
    const parsed = check("addr", f.value, () => parseInterfaceCidr(f.value));
    if (!parsed) continue;
    if (parsed.inferred) {
      warnings.push(
        `${annotation}: addr=${f.value} has no prefix length; assuming ${formatCidr(parsed.cidr)}`,
      );
    }
    if (addrs.some((a) => a.address === parsed.cidr.address)) {
      err("addr", f.value, "the same address twice: expected each addr once");
      continue;
    }
    addrs.push(parsed.cidr);
  }

  const gateways: string[] = [];
  const gwFamilies = new Set<number>();
  for (const f of fields.filter((f) => f.key === "gw")) {
    const ip = check("gw", f.value, () => parseIp(f.value));
    if (!ip) continue;
    if (isUnspecified(ip) || isMulticast(ip)) {
      err("gw", f.value, "expected a unicast gateway address");
      continue;
    }
    if (gwFamilies.has(ip.family)) {
      err("gw", f.value, `a second IPv${ip.family} gateway: expected at most one gw per family`);
      continue;
    }
    gwFamilies.add(ip.family);
    const text = formatIp(ip);
    const onLink = addrs.some((a) =>
      a.family === ip.family && samePrefix(parseIp(a.address), ip, a.prefix)
    );
    if (!onLink) {
      warnings.push(`${annotation}: gw=${text} is in none of this interface's addr subnets`);
    }
    gateways.push(text);
  }

  if (errors.length > 0) return { warnings, errors };
  return {
    ctrNetwork: {
      index,
      vmmac: vmmac!,
      ...(mac === undefined ? {} : { mac }),
      addrs,
      ...(ifname === undefined ? {} : { ifname }),
      gateways,
    },
    warnings,
    errors,
  };
}
