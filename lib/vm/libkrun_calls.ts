/**
 * The libkrun backend's call list: VmPlan → the exact libkrun calls (a discriminated union, JSON
 * as `{call, args}` in C order, ctx id first), applying them to a real context, and the one
 * sequence both the `nerdbox vmm` child and `nerdbox run --dry-run` go through
 * (configureContext).
 */
import type { Libkrun } from "../../ffi/libkrun.ts";
import { KrunArgumentError, KrunError } from "../../ffi/libkrun_errors.ts";
import { KRUN_DISK_FORMAT } from "../../ffi/libkrun_symbols.ts";
import { CHANNEL_PORT_NAME } from "../guest_protocol.ts";
import { SpecValidationError } from "../spec/types.ts";
import { type Mac, macBytes, parseMac } from "../spec/mac.ts";
import type { SocketPath } from "../spec/socket_path.ts";
import {
  libkrunNetFlags,
  type LibkrunNetFunction,
  libkrunNetFunction,
  NET_FLAG_INCLUDE_VNET_HEADER,
} from "../spec/libkrun_net.ts";
import { vnetHdrErrors } from "./plan_network.ts";
import type { VmPlan } from "./types.ts";
import { VOLUMES_TAG } from "./volumes.ts";

/** One libkrun call: the C function and its arguments in C order (ctx id first). */
export type KrunCall =
  | { call: "krun_set_vm_config"; args: [ctx: number, vcpus: number, ramMib: number] }
  | { call: "krun_set_root"; args: [ctx: number, root: string] }
  | { call: "krun_add_virtiofs"; args: [ctx: number, tag: string, path: string] }
  | {
    call: "krun_add_disk2";
    args: [ctx: number, blockId: string, path: string, format: number, readOnly: boolean];
  }
  | { call: "krun_set_port_map"; args: [ctx: number, ports: string[]] }
  | {
    call: LibkrunNetFunction;
    args: [ctx: number, path: SocketPath, fd: -1, mac: Mac, features: number, flags: number];
  }
  | { call: "krun_add_virtio_console_multiport"; args: [ctx: number] }
  | {
    call: "krun_add_console_port_inout";
    args: [ctx: number, consoleId: number, name: string, inFd: number, outFd: number];
  }
  | { call: "krun_set_console_output"; args: [ctx: number, path: string] }
  | { call: "krun_set_exec"; args: [ctx: number, path: string, argv: string[], envp: string[]] }
  | { call: "krun_set_workdir"; args: [ctx: number, path: string] }
  | { call: "krun_add_vsock_port"; args: [ctx: number, port: number, path: string] };

/** A call with what libkrun returned (a number), or why it was not made (a string). */
export type KrunCallResult = KrunCall & { result: number | string };

/** A call shown in a dry run that is not part of the applied list (init_log, create_ctx, …). */
export interface KrunNote {
  call: string;
  args: Array<number | string>;
  result: number | string;
}

/** The virtio-fs tag the container rootfs is shared under (the guest mounts it by this tag). */
export const ROOTFS_TAG = "rootfs";
/** libkrun log level used when `--log-level` is not given (errors, captured for diagnosis). */
export const DEFAULT_VMM_LOG_LEVEL = 1;

/** The guest program libkrun runs (`krun_set_exec`) from the guest image root. */
export interface GuestExec {
  /** Guest image root directory (`krun_set_root`). */
  rootDir: string;
  /** Program path inside the guest root. */
  path: string;
  /** Its arguments (no argv[0]). */
  args: string[];
  /** Its full environment, `K=V`. */
  env: string[];
}

/** What the call list needs besides the plan. */
export interface LibkrunSetup {
  /** The context id the calls apply to. */
  ctx: number;
  guest: GuestExec;
  /** Connected socket fd carrying the `nerdbox.ctl` console port. */
  channelFd: number;
  /** File the implicit console (guest kernel and init output) is written to. */
  consoleLog: string;
  /** The VM's volume share directory (host bind mounts), when the plan has volumes. */
  volumesDir?: string;
  /** Whether this libkrun accepts NET_FLAG_INCLUDE_VNET_HEADER (probed). */
  vnetHdr: boolean;
}

/**
 * The exact call sequence for a plan (after krun_create_ctx, before krun_start_enter). Throws
 * SpecValidationError for what this libkrun cannot do (vnet_hdr without support).
 */
export function libkrunCalls(plan: VmPlan, s: LibkrunSetup): KrunCall[] {
  const c = s.ctx;
  const calls: KrunCall[] = [
    { call: "krun_set_vm_config", args: [c, plan.cpus, plan.memoryMiB] },
    { call: "krun_set_root", args: [c, s.guest.rootDir] },
  ];
  if (plan.layers) {
    // erofs layers: read-only raw disks /dev/vda… in this order (lib/vm/erofs_layers.ts).
    plan.layers.forEach((path, i) => {
      calls.push({
        call: "krun_add_disk2",
        args: [c, `layer${i}`, path, KRUN_DISK_FORMAT.raw, true],
      });
    });
  } else {
    calls.push({ call: "krun_add_virtiofs", args: [c, ROOTFS_TAG, plan.rootfs] });
  }
  // Host bind mounts: the VM's volume share, bound into the VMM's own mount namespace.
  if (s.volumesDir !== undefined) {
    calls.push({ call: "krun_add_virtiofs", args: [c, VOLUMES_TAG, s.volumesDir] });
  }
  const net = plan.network;
  if (net.kind === "tsi") {
    // Without a port map libkrun publishes every guest listener on the host: always set one
    // (empty when nothing is published) unless every port was asked for (docs/libkrun.md).
    if (!net.publishAll) {
      const ports = net.ports.map((p) => `${p.hostPort}:${p.guestPort}`);
      calls.push({ call: "krun_set_port_map", args: [c, ports] });
    }
  } else if (net.kind === "nics") {
    const refused = vnetHdrErrors("libkrun", net.nics, s.vnetHdr);
    if (refused.length > 0) throw new SpecValidationError(refused);
    for (const n of net.nics) {
      calls.push({
        call: libkrunNetFunction(n),
        args: [c, n.socket, -1, n.mac, n.features, libkrunNetFlags(n)],
      });
    }
  } else {
    throw new Error(`libkrun cannot realise a ${net.kind} network (a QEMU plan)`);
  }
  calls.push(
    { call: "krun_add_virtio_console_multiport", args: [c] },
    {
      call: "krun_add_console_port_inout",
      args: [c, 0, CHANNEL_PORT_NAME, s.channelFd, s.channelFd],
    },
    { call: "krun_set_console_output", args: [c, s.consoleLog] },
    { call: "krun_set_exec", args: [c, s.guest.path, s.guest.args, s.guest.env] },
  );
  return calls;
}

/** Applies one call through the checked wrapper; returns libkrun's (non-negative) result. */
export function applyCall(lib: Libkrun, k: KrunCall): number {
  switch (k.call) {
    case "krun_set_vm_config":
      lib.setVmConfig(...k.args);
      return 0;
    case "krun_set_root":
      lib.setRoot(...k.args);
      return 0;
    case "krun_add_virtiofs":
      lib.addVirtiofs(...k.args);
      return 0;
    case "krun_add_disk2":
      lib.addDisk2(...k.args);
      return 0;
    case "krun_set_port_map":
      lib.setPortMap(...k.args);
      return 0;
    case "krun_add_net_unixstream":
    case "krun_add_net_unixgram": {
      const [ctx, path, , mac, features, flags] = k.args;
      const net = { path, mac: macBytes(mac), features, flags };
      if (k.call === "krun_add_net_unixstream") lib.addNetUnixstream(ctx, net);
      else lib.addNetUnixgram(ctx, net);
      return 0;
    }
    case "krun_add_virtio_console_multiport": {
      const id = lib.addVirtioConsoleMultiport(...k.args);
      if (id !== 0) {
        throw new Error(`krun_add_virtio_console_multiport returned console ${id}, expected 0`);
      }
      return id;
    }
    case "krun_add_console_port_inout":
      lib.addConsolePortInout(...k.args);
      return 0;
    case "krun_set_console_output":
      lib.setConsoleOutput(...k.args);
      return 0;
    case "krun_set_exec":
      lib.setExec(...k.args);
      return 0;
    case "krun_set_workdir":
      lib.setWorkdir(...k.args);
      return 0;
    case "krun_add_vsock_port":
      lib.addVsockPort(...k.args);
      return 0;
  }
}

/**
 * Applies calls in order and reports each result; stops at the first failure (later calls are
 * reported as not made). `error` is that failure.
 */
export function applyCalls(lib: Libkrun, calls: KrunCall[]): {
  results: KrunCallResult[];
  error?: Error;
} {
  const results: KrunCallResult[] = [];
  let error: Error | undefined;
  for (const k of calls) {
    if (error) {
      results.push({ ...k, result: "not called: an earlier call failed" });
      continue;
    }
    try {
      results.push({ ...k, result: applyCall(lib, k) });
    } catch (e) {
      if (!(e instanceof KrunError || e instanceof KrunArgumentError)) throw e;
      error = e;
      results.push({ ...k, result: e instanceof KrunError ? -e.errno : `refused: ${e.message}` });
    }
  }
  return error ? { results, error } : { results };
}

/**
 * Whether this libkrun accepts NET_FLAG_INCLUDE_VNET_HEADER: adds a NIC with the flag to a
 * throwaway context (nothing is opened at that point) and frees it. 1.16 answers EINVAL.
 */
export function probeVnetHdr(lib: Libkrun): boolean {
  const ctx = lib.createCtx();
  try {
    lib.addNetUnixstream(ctx, {
      path: "/nonexistent/nerdbox-vnet-hdr-probe.sock",
      mac: macBytes(parseMac("02:00:00:00:00:01")),
      features: 0,
      flags: NET_FLAG_INCLUDE_VNET_HEADER,
    });
    return true;
  } catch (e) {
    if (e instanceof KrunError && e.errno === 22) return false;
    throw e;
  } finally {
    lib.freeCtx(ctx);
  }
}

/** The vnet_hdr capability a plan needs probed (false when no NIC asks for the header). */
export function planVnetHdr(lib: Libkrun, plan: VmPlan): boolean {
  const wanted = plan.network.kind === "nics" && plan.network.nics.some((n) => n.vnetHdr);
  return wanted ? probeVnetHdr(lib) : false;
}

/** A configured context: its id, every call with its result, and the first failure. */
export interface ConfiguredContext {
  ctx: number;
  results: KrunCallResult[];
  error?: Error;
}

/**
 * The one libkrun set-up sequence, shared by the `nerdbox vmm` child and the dry run: probes
 * vnet_hdr when a NIC asks for it, creates a context and applies the plan's calls to it (stopping
 * at the first failure). Throws SpecValidationError for what this libkrun cannot run. The caller
 * frees the context (dry run) or enters it (vmm).
 */
export function configureContext(
  lib: Libkrun,
  plan: VmPlan,
  s: Omit<LibkrunSetup, "ctx" | "vnetHdr">,
): ConfiguredContext {
  const vnetHdr = planVnetHdr(lib, plan);
  const ctx = lib.createCtx();
  try {
    const { results, error } = applyCalls(lib, libkrunCalls(plan, { ...s, ctx, vnetHdr }));
    return error ? { ctx, results, error } : { ctx, results };
  } catch (e) {
    lib.freeCtx(ctx);
    throw e;
  }
}
