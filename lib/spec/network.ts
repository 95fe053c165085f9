/** The value of `io.containerd.nerdbox.network.N` (and of `nerdbox run --net`): one VM NIC. */
import type { Cidr, NetMode, NetworkSpec, SpecError } from "./types.ts";
import { fieldChecks, parseKeyValueRecord } from "./kv.ts";
import { checkSocketPath } from "./socket_path.ts";
import { parseMac } from "./mac.ts";
import { parseGoBool } from "./bool.ts";
import { formatCidr, parseInterfaceCidr } from "./cidr.ts";
import { featureNames, parseFeatures } from "./features.ts";
import { didYouMean } from "./suggest.ts";

/** Every key of a network value, in documentation order. */
export const NETWORK_KEYS = [
  "socket",
  "mode",
  "mac",
  "dhcp",
  "addr",
  "features",
  "vfkit",
  "vnet_hdr",
] as const;

/** Socket types, as the `mode` key spells them. */
export const NET_MODES: readonly NetMode[] = ["unixgram", "unixstream"];

const REQUIRED_HINT: Record<string, string> = {
  socket: "socket=/absolute/path/of/the/provider.sock",
  mode: "mode=unixgram or mode=unixstream",
  mac: "mac=02:00:00:00:00:01 (a unicast MAC)",
};

/** The result of parsing one network value: a spec when valid, and every problem found. */
export interface ParsedNetwork {
  network?: NetworkSpec;
  warnings: string[];
  errors: SpecError[];
}

/**
 * Parses one network value (a CSV record of key=value fields). Never throws on user input; every
 * error names `annotation`, the field and the value. `index` becomes NetworkSpec.index.
 */
export function parseNetworkValue(value: string, annotation: string, index: number): ParsedNetwork {
  const warnings: string[] = [];
  const record = parseKeyValueRecord(value, annotation, NETWORK_KEYS, [
    "addr",
  ]);
  const { fields, errors, malformed } = record;
  const { get, err, check } = fieldChecks(record, annotation);

  for (const k of ["socket", "mode", "mac"]) {
    if (!malformed && get(k) === undefined && !errors.some((e) => e.field === k)) {
      err(k, "", `missing required key: expected ${REQUIRED_HINT[k]}`);
    }
  }

  const modeText = get("mode");
  let mode: NetMode | undefined;
  if (modeText !== undefined) {
    if ((NET_MODES as readonly string[]).includes(modeText)) {
      mode = modeText as NetMode;
    } else {
      err(
        "mode",
        modeText,
        `expected unixgram (a SOCK_DGRAM provider such as gvproxy -listen-vfkit) or unixstream ` +
          `(a SOCK_STREAM provider such as passt or libgvproxy)${didYouMean(modeText, NET_MODES)}`,
      );
    }
  }

  const socketText = get("socket");
  const socket = socketText === undefined
    ? undefined
    : check("socket", socketText, () => checkSocketPath(socketText, mode));
  const macText = get("mac");
  const mac = macText === undefined ? undefined : check("mac", macText, () => parseMac(macText));
  const dhcpText = get("dhcp");
  const dhcp = dhcpText === undefined
    ? false
    : check("dhcp", dhcpText, () => parseGoBool(dhcpText));
  const vfkitText = get("vfkit");
  const vfkit = vfkitText === undefined
    ? false
    : check("vfkit", vfkitText, () => parseGoBool(vfkitText));
  const vnetText = get("vnet_hdr");
  const vnetHdr = vnetText === undefined
    ? false
    : check("vnet_hdr", vnetText, () => parseGoBool(vnetText));
  const featText = get("features");
  const features = featText === undefined
    ? 0
    : check("features", featText, () => parseFeatures(featText));

  const addrs: Cidr[] = [];
  const addrFields = fields.filter((f) => f.key === "addr");
  for (const f of addrFields) {
    const parsed = check("addr", f.value, () => parseInterfaceCidr(f.value));
    if (!parsed) continue;
    const same = addrs.find((a) => a.family === parsed.cidr.family);
    if (same) {
      err(
        "addr",
        f.value,
        `a second IPv${same.family} address (the first is ${formatCidr(same)}): ` +
          `expected at most one addr per family (one IPv4, one IPv6)`,
      );
      continue;
    }
    if (parsed.inferred) {
      warnings.push(
        `${annotation}: addr=${f.value} has no prefix length; assuming ${formatCidr(parsed.cidr)}`,
      );
    }
    addrs.push(parsed.cidr);
  }
  if (dhcp === true && addrFields.length > 0) {
    err(
      "dhcp",
      dhcpText!,
      "dhcp=true together with addr: expected either dhcp=true or static addr fields, not both",
    );
  }
  if (vfkit === true && mode === "unixstream") {
    err(
      "vfkit",
      vfkitText!,
      "vfkit=true needs mode=unixgram: the VFKT greeting (libkrun NET_FLAG_VFKIT) exists only " +
        "for datagram sockets",
    );
  }
  if (vnetHdr === true) {
    warnings.push(
      `${annotation}: vnet_hdr=true needs libkrun's NET_FLAG_INCLUDE_VNET_HEADER, which no ` +
        `libkrun release has; the libkrun backend will refuse this network`,
    );
  }

  if (errors.length > 0) return { warnings, errors };
  return {
    network: {
      index,
      socket: socket!,
      mode: mode!,
      mac: mac!,
      dhcp: dhcp!,
      addrs,
      features: features!,
      featureNames: featureNames(features!),
      vfkit: vfkit!,
      vnetHdr: vnetHdr!,
    },
    warnings,
    errors,
  };
}
