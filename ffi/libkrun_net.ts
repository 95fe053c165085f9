/**
 * libkrun's virtio-net NICs: `krun_add_net_unixstream` / `krun_add_net_unixgram` as one checked
 * call (exactly one of a socket path or a connected fd, the MAC as 6 bytes, u32 features/flags).
 */
import { checkKrunResult, KrunArgumentError } from "./libkrun_errors.ts";
import { Arena, checkInt, ctxId, I32_MAX, U32_MAX } from "./libkrun_marshal.ts";
import type { KrunSymbols } from "./libkrun_symbols.ts";

/** A NIC backend for `krun_add_net_unixstream` / `krun_add_net_unixgram`. */
export interface NetArgs {
  /** Socket path (path mode) — exactly one of `path` and `fd`. */
  path?: string;
  /** Connected socket fd (fd mode). */
  fd?: number;
  /** The MAC's 6 bytes (`uint8_t c_mac[6]`). */
  mac: Uint8Array;
  /** virtio-net feature bits. */
  features: number;
  /** NET_FLAG_* bits. */
  flags: number;
}

/** The two NIC calls (same signature, different socket type). */
export type KrunNetCall = "krun_add_net_unixstream" | "krun_add_net_unixgram";

/** Adds a NIC through `call` after checking every argument. */
export function addNet(symbols: KrunSymbols, call: KrunNetCall, ctx: number, n: NetArgs): void {
  const a = new Arena();
  const c = ctxId(call, ctx);
  const hasPath = n.path !== undefined;
  const hasFd = n.fd !== undefined && n.fd !== -1;
  if (hasPath === hasFd) {
    throw new KrunArgumentError(call, "c_path/fd", "give exactly one of a socket path or an fd");
  }
  const fd = hasFd ? checkInt(call, "fd", n.fd, 0, I32_MAX) : -1;
  // In fd mode the header documents c_path as NULL.
  const path = hasPath ? a.ptr(a.cstr(call, "c_path", n.path)) : null;
  const mac = a.mac(call, "c_mac", n.mac);
  checkInt(call, "features", n.features, 0, U32_MAX);
  checkInt(call, "flags", n.flags, 0, U32_MAX);
  const ret = symbols[call](c, path, fd, mac, n.features, n.flags);
  a.release();
  checkKrunResult(call, ret, {
    ctx_id: ctx,
    c_path: n.path ?? null,
    fd,
    c_mac: [...mac].map((b) => b.toString(16).padStart(2, "0")).join(":"),
    features: n.features,
    flags: n.flags,
  });
}
