/**
 * How a NIC maps onto libkrun's `krun_add_net_unixgram` / `krun_add_net_unixstream`: the one owner
 * of the mode → function mapping and of the flags (the NET_FLAG_* values are the C header's, in
 * ffi/libkrun_symbols.ts).
 */
import { NET_FLAG_INCLUDE_VNET_HEADER, NET_FLAG_VFKIT } from "../../ffi/libkrun_symbols.ts";
import type { NetMode } from "./types.ts";
import { type Mac, macCText } from "./mac.ts";

export { NET_FLAG_INCLUDE_VNET_HEADER, NET_FLAG_VFKIT };

/** What of a NIC decides its libkrun call (a NetworkSpec or a NicPlan). */
export interface LibkrunNic {
  socket: string;
  mode: NetMode;
  mac: Mac;
  features: number;
  vfkit: boolean;
  vnetHdr: boolean;
}

/** The libkrun function that adds a NIC of this mode. */
export type LibkrunNetFunction = "krun_add_net_unixgram" | "krun_add_net_unixstream";

/** The libkrun function that adds this network. */
export function libkrunNetFunction(n: { mode: NetMode }): LibkrunNetFunction {
  return n.mode === "unixgram" ? "krun_add_net_unixgram" : "krun_add_net_unixstream";
}

/** The `flags` argument for this network. */
export function libkrunNetFlags(n: { vfkit: boolean; vnetHdr: boolean }): number {
  return (n.vfkit ? NET_FLAG_VFKIT : 0) | (n.vnetHdr ? NET_FLAG_INCLUDE_VNET_HEADER : 0);
}

/** The flags by name, e.g. `NET_FLAG_VFKIT`, or `0`. */
export function libkrunNetFlagsText(n: { vfkit: boolean; vnetHdr: boolean }): string {
  const names = [];
  if (n.vfkit) names.push("NET_FLAG_VFKIT");
  if (n.vnetHdr) names.push("NET_FLAG_INCLUDE_VNET_HEADER");
  return names.length > 0 ? names.join("|") : "0";
}

/** The call as C, e.g. `krun_add_net_unixgram(ctx, "/tmp/gv.sock", -1, mac, 0, NET_FLAG_VFKIT)`. */
export function libkrunNetCall(n: LibkrunNic): string {
  const flags = libkrunNetFlags(n);
  const flagsText = flags === 0 ? "0" : `${libkrunNetFlagsText(n)} /* ${flags} */`;
  return `${libkrunNetFunction(n)}(ctx, ${JSON.stringify(n.socket)}, -1, ${macCText(n.mac)}, ` +
    `${n.features}, ${flagsText})`;
}
