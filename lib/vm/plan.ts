/**
 * SandboxSpec → VmPlan, and the choice of backend. The plan decides everything a backend needs
 * (lib/vm/plan_network.ts decides the network: no network attached means TSI under libkrun and a
 * private passt or the pod interface under QEMU; networks attached become NICs in annotation
 * order, the first being eth0 with the default route; ports together with NICs are refused);
 * the netns is checked once, here.
 */
import type { SandboxSpec } from "../spec/types.ts";
import { SpecValidationError } from "../spec/types.ts";
import type { BackendChoice } from "../spec/types.ts";
import type { Accel, Backend, VmPlan } from "./types.ts";
import { loadLibkrun } from "./libkrun_locate.ts";
import { validateNetnsPath } from "../net/netns.ts";
import { planNetwork } from "./plan_network.ts";
import { planCtrNetworks } from "./plan_ctr_network.ts";

export { firstHostAddress, vnetHdrError } from "./plan_network.ts";

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
  /** Where spec.netns came from, named in errors (`--netns`, `config.json netns`). */
  netnsSource?: string;
}

/** Builds the VmPlan; throws SpecValidationError naming the flag when the spec cannot be run. */
export function planVm(spec: SandboxSpec, opts: PlanOptions): VmPlan {
  // The netns is checked once, here; everything downstream carries the NetnsPath.
  const netns = spec.netns === undefined
    ? undefined
    : validateNetnsPath(spec.netns, opts.netnsSource ?? "netns");
  const { network, errors } = planNetwork(spec, {
    backend: opts.backend,
    stateDir: opts.stateDir,
    ...(netns !== undefined ? { netns } : {}),
    ...(opts.libkrunCaps ? { libkrunCaps: opts.libkrunCaps } : {}),
  });
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
    ...(netns !== undefined ? { netns } : {}),
    stateDir: opts.stateDir,
    ...(opts.accel ? { accel: opts.accel } : {}),
    ...(opts.libkrun ? { libkrun: { ...opts.libkrun } } : {}),
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
