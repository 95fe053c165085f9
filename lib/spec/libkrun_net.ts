/** How a NetworkSpec maps onto libkrun's `krun_add_net_unixgram` / `krun_add_net_unixstream`. */
import type { NetworkSpec } from "./types.ts";

/** libkrun NET_FLAG_VFKIT: send "VFKT" after connecting a unixgram socket. */
export const NET_FLAG_VFKIT = 1;
/** NET_FLAG_INCLUDE_VNET_HEADER of unreleased libkrun builds (1 << 1); released builds reject it. */
export const NET_FLAG_INCLUDE_VNET_HEADER = 2;

/** The libkrun function that adds this network. */
export function libkrunNetFunction(n: NetworkSpec): string {
  return n.mode === "unixgram" ? "krun_add_net_unixgram" : "krun_add_net_unixstream";
}

/** The `flags` argument for this network. */
export function libkrunNetFlags(n: NetworkSpec): number {
  return (n.vfkit ? NET_FLAG_VFKIT : 0) | (n.vnetHdr ? NET_FLAG_INCLUDE_VNET_HEADER : 0);
}

/** The flags by name, e.g. `NET_FLAG_VFKIT`, or `0`. */
export function libkrunNetFlagsText(n: NetworkSpec): string {
  const names = [];
  if (n.vfkit) names.push("NET_FLAG_VFKIT");
  if (n.vnetHdr) names.push("NET_FLAG_INCLUDE_VNET_HEADER");
  return names.length > 0 ? names.join("|") : "0";
}

/** The call as C, e.g. `krun_add_net_unixgram(ctx, "/tmp/gv.sock", -1, mac, 0, NET_FLAG_VFKIT)`. */
export function libkrunNetCall(n: NetworkSpec): string {
  const mac = `{${n.mac.split(":").map((b) => `0x${b}`).join(", ")}}`;
  const flags = libkrunNetFlags(n);
  const flagsText = flags === 0 ? "0" : `${libkrunNetFlagsText(n)} /* ${flags} */`;
  return `${libkrunNetFunction(n)}(ctx, ${JSON.stringify(n.socket)}, -1, ${mac}, ${n.features}, ` +
    `${flagsText})`;
}
