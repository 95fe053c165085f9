/**
 * SandboxSpec → backend-neutral VmPlan, and the choice of backend. The rules: no network attached
 * means TSI (published ports become the libkrun port map, or passt forwards under QEMU); networks
 * attached become NICs in annotation order, the first being eth0 with the default route; ports
 * together with NICs are refused under both backends.
 */
import type { Cidr, NetworkSpec, PortSpec, SandboxSpec, SpecError } from "../spec/types.ts";
import { SpecValidationError } from "../spec/types.ts";
import type { BackendChoice } from "../spec/types.ts";
import type { Accel, Backend, NetworkPlan, NicPlan, VmPlan } from "./types.ts";
import { loadLibkrun } from "./libkrun_locate.ts";
import { planCtrNetworks } from "./plan_ctr_network.ts";

/** Options of planVm. */
export interface PlanOptions {
  backend: Backend;
  /** Host directory for this VM's sockets and logs (the backend removes it at the end). */
  stateDir: string;
  /** QEMU accelerator (`--accel`). */
  accel?: Accel;
  /** libkrun library path (`--libkrun`) and log level (`--log-level`). */
  libkrun?: { path?: string; logLevel?: number };
  /** What the libkrun that will run the plan supports (probed); absent = not checked here. */
  libkrunCaps?: { vnetHdr: boolean };
}

/** The flag ports come from, named in errors. */
const PUBLISH = "--publish";

function portText(p: PortSpec): string {
  const ip = p.hostIp === undefined
    ? ""
    : p.hostIp.includes(":")
    ? `[${p.hostIp}]:`
    : `${p.hostIp}:`;
  return `${ip}${p.hostPort}:${p.guestPort}/${p.protocol}`;
}

/** The first host address of an IPv4 subnet (network + 1; /31 the network address; /32 none). */
export function firstHostAddress(cidr: Cidr): string | undefined {
  if (cidr.family !== 4) return undefined;
  const n = cidr.address.split(".").reduce((acc, o) => (acc * 256) + Number(o), 0);
  if (cidr.prefix >= 32) return undefined;
  const size = 2 ** (32 - cidr.prefix);
  const network = n - (n % size);
  const host = cidr.prefix === 31 ? network : network + 1;
  return [24, 16, 8, 0].map((s) => Math.floor(host / 2 ** s) % 256).join(".");
}

function cidrText(c: Cidr): string {
  return `${c.address}/${c.prefix}`;
}

function nicPlan(n: NetworkSpec, i: number): NicPlan {
  const first = i === 0;
  const v4 = n.addrs.find((a) => a.family === 4);
  const gateway4 = first && !n.dhcp && v4 ? firstHostAddress(v4) : undefined;
  return {
    name: `eth${i}`,
    socket: n.socket,
    mode: n.mode,
    mac: n.mac,
    features: n.features,
    vfkit: n.vfkit,
    vnetHdr: n.vnetHdr,
    dhcp: n.dhcp,
    addrs: n.addrs.map(cidrText),
    defaultRoute: first,
    ...(gateway4 ? { gateway4 } : {}),
  };
}

/** Checks published ports against what TSI (libkrun's port map) can express. */
function tsiPortErrors(ports: PortSpec[]): SpecError[] {
  const errors: SpecError[] = [];
  const guestSeen = new Map<number, PortSpec>();
  for (const p of ports) {
    const text = portText(p);
    if (p.hostIp !== undefined) {
      errors.push({
        annotation: PUBLISH,
        field: "",
        value: text,
        message: `${JSON.stringify(text)}: libkrun's TSI port map has no host address: the port ` +
          `is served on the address the guest listens on; publish it as ` +
          `${p.hostPort}:${p.guestPort}, or use --backend qemu (passt binds host addresses)`,
      });
    }
    if (p.protocol === "udp") {
      errors.push({
        annotation: PUBLISH,
        field: "",
        value: text,
        message: `${JSON.stringify(text)}: libkrun's TSI port map forwards TCP only ` +
          `(guest UDP sockets are proxied as they are opened); drop /udp or use --backend qemu`,
      });
    }
    const dup = guestSeen.get(p.guestPort);
    if (dup) {
      errors.push({
        annotation: PUBLISH,
        field: "",
        value: text,
        message: `${JSON.stringify(text)}: guest port ${p.guestPort} is already published as ` +
          `${portText(dup)}: libkrun's TSI port map takes each guest port once`,
      });
    } else guestSeen.set(p.guestPort, p);
  }
  return errors;
}

/** Builds the VmPlan; throws SpecValidationError naming the flag when the spec cannot be run. */
export function planVm(spec: SandboxSpec, opts: PlanOptions): VmPlan {
  const errors: SpecError[] = [];
  let network: NetworkPlan;
  if (spec.networks.length === 0) {
    if (opts.backend === "libkrun") errors.push(...tsiPortErrors(spec.ports));
    // Nothing is published in the host's netns unless asked; in a joined (pod) netns the netns
    // is the boundary, so every guest listener answers at the pod IP, as under QEMU.
    const publishAll = spec.publishAll ?? (spec.netns !== undefined && spec.ports.length === 0);
    if (spec.publishAll && opts.backend === "qemu") {
      errors.push({
        annotation: "io.containerd.nerdbox.publish",
        field: "",
        value: "all",
        message: `publishing every guest listener is libkrun's TSI behaviour; QEMU's private ` +
          `passt forwards only listed ports: list them (e.g. 8080:80) or use --backend libkrun`,
      });
    }
    network = {
      kind: "tsi",
      ports: spec.ports.map((p) => ({ ...p })),
      ...(publishAll ? { publishAll: true } : {}),
    };
  } else {
    if (spec.ports.length > 0) {
      const list = spec.ports.map(portText).join(", ");
      errors.push({
        annotation: PUBLISH,
        field: "",
        value: list,
        message: `ports cannot be published while networks are attached (${spec.networks.length}` +
          ` given): published ports ride on the default network (TSI under libkrun, passt under ` +
          `QEMU), which a NIC replaces; forward them in the provider on the network instead ` +
          `(gvproxy port_mappings, passt -t), or drop --net/the network annotations`,
      });
    }
    if (opts.backend === "libkrun" && opts.libkrunCaps && !opts.libkrunCaps.vnetHdr) {
      spec.networks.forEach((n, i) => {
        if (n.vnetHdr) errors.push(vnetHdrError(i, n));
      });
    }
    network = { kind: "nics", nics: spec.networks.map(nicPlan) };
  }
  const ctrNetworks = planCtrNetworks(spec.ctrNetworks, network, errors);
  if (errors.length > 0) throw new SpecValidationError(errors);
  return {
    id: spec.id,
    backend: opts.backend,
    cpus: spec.resources.cpus,
    memoryMiB: spec.resources.memoryMiB,
    rootfs: spec.rootfs,
    process: structuredClone(spec.process),
    hostname: spec.hostname,
    network,
    ...(ctrNetworks.length > 0 ? { ctrNetworks } : {}),
    ...(spec.dns ? { dns: structuredClone(spec.dns) } : {}),
    ...(spec.netns !== undefined ? { netns: spec.netns } : {}),
    stateDir: opts.stateDir,
    ...(opts.accel ? { accel: opts.accel } : {}),
    ...(opts.libkrun ? { libkrun: { ...opts.libkrun } } : {}),
  };
}

/** The error for a NIC asking for the vnet header from a libkrun that lacks the flag. */
export function vnetHdrError(i: number, n: { index?: number; mac: string }): SpecError {
  return {
    annotation: `io.containerd.nerdbox.network.${n.index ?? i} / --net #${n.index ?? i}`,
    field: "vnet_hdr",
    value: "true",
    message: `this libkrun does not support NET_FLAG_INCLUDE_VNET_HEADER (it rejected the flag ` +
      `with EINVAL when probed; libkrun 1.16 has no such flag): drop vnet_hdr (frames then ` +
      `carry no virtio-net header) or install a libkrun built with it`,
  };
}

/** Why /dev/kvm can or cannot run guests here. */
export interface KvmStatus {
  usable: boolean;
  /** One sentence naming the cause when not usable. */
  reason: string;
}

/**
 * Checks, without running anything, whether /dev/kvm can run ordinary guests: it must exist and
 * open read-write, and must not be PVM (`kvm_pvm`, pagetable-based nested KVM, on which guest
 * kernels die with KVM_EXIT_INTERNAL_ERROR during boot).
 */
export function kvmStatus(dev = "/dev/kvm", sysModule = "/sys/module"): KvmStatus {
  try {
    const f = Deno.openSync(dev, { read: true, write: true });
    f.close();
  } catch (e) {
    const why = e instanceof Deno.errors.NotFound
      ? `${dev} does not exist (no KVM on this host)`
      : `${dev} cannot be opened read-write (${(e as Error).message})`;
    return { usable: false, reason: why };
  }
  try {
    Deno.statSync(`${sysModule}/kvm_pvm`);
    return {
      usable: false,
      reason: `${dev} is kvm_pvm (pagetable-based nested KVM), which cannot run the guest ` +
        `kernel: it dies during boot with KVM_EXIT_INTERNAL_ERROR`,
    };
  } catch {
    return { usable: true, reason: `${dev} is usable` };
  }
}

/** Options of resolveBackend. */
export interface ResolveOptions {
  /** `--libkrun PATH`. */
  libkrunPath?: string;
}

/**
 * Resolves `auto`: libkrun when the library loads and /dev/kvm can run guests, else QEMU.
 * Explicit choices are returned as given (their failures are reported when the VM starts).
 */
export function resolveBackend(choice: BackendChoice, opts: ResolveOptions = {}): Promise<Backend> {
  if (choice !== "auto") return Promise.resolve(choice);
  try {
    loadLibkrun(opts.libkrunPath === undefined ? {} : { explicit: opts.libkrunPath });
  } catch {
    return Promise.resolve("qemu");
  }
  return Promise.resolve(kvmStatus().usable ? "libkrun" : "qemu");
}
