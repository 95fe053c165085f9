/**
 * Backend-neutral VM plan and the handle of a running VM. lib/vm/plan.ts makes a VmPlan from a
 * SandboxSpec; each backend (libkrun.ts, qemu.ts) runs a VmPlan and returns a VmHandle.
 */
import type { DnsSpec, NetMode, PortSpec, ProcessSpec } from "../spec/types.ts";
import type { Mac } from "../spec/mac.ts";
import type { SocketPath } from "../spec/socket_path.ts";
import type { NetnsPath } from "../spec/netns_path.ts";
import type { ExecTarget, GuestCgroupStats, GuestVolumeMount } from "../guest_protocol.ts";
import type { ResourcesUpdate } from "../linux_resources.ts";
import type { CtrNicPlan } from "./plan_ctr_network.ts";

/** A concrete backend (after `auto` is resolved). */
export type Backend = "libkrun" | "qemu";

/** QEMU accelerator choice (`nerdbox run --accel`). */
export type Accel = "auto" | "kvm" | "tcg";

/** One NIC as the VM will see it, in order (`eth0` first). */
export interface NicPlan {
  /** Guest interface name the NIC is expected to get (`eth0`, `eth1`, …). */
  name: string;
  socket: SocketPath;
  mode: NetMode;
  mac: Mac;
  features: number;
  vfkit: boolean;
  vnetHdr: boolean;
  dhcp: boolean;
  /** Static CIDRs (`192.168.127.2/24`). */
  addrs: string[];
  /** Only the first NIC carries the default route. */
  defaultRoute: boolean;
  /** IPv4 gateway for the default route when static (first host address of the subnet). */
  gateway4?: string;
  /** QEMU, unixgram: the socket QEMU binds in the state dir (the provider sends to it). */
  localSocket?: SocketPath;
}

/**
 * How the VM reaches the network, as lib/vm/plan_network.ts decided it: libkrun's TSI, QEMU's
 * private passt or the pod interface (nothing attached), or NICs on provider sockets.
 */
export type NetworkPlan =
  | {
    kind: "tsi";
    ports: PortSpec[];
    /** Every guest listener is published 1:1 (no port map); absent = only `ports`. */
    publishAll?: boolean;
  }
  | {
    /** QEMU: a private passt (one NIC, DHCP) forwarding `ports`. */
    kind: "passt";
    mac: Mac;
    ports: PortSpec[];
    /** passt's socket in the state dir. */
    socket: SocketPath;
    /** passt without its DHCP server (tests the guest's DHCP timeout). */
    noDhcp?: boolean;
  }
  /** QEMU in a prepared netns: the VM takes over the pod interface (tap + tc redirect). */
  | { kind: "pod" }
  | { kind: "nics"; nics: NicPlan[] };

/** Everything a backend needs to boot one VM and run its workload. */
export interface VmPlan {
  id: string;
  backend: Backend;
  cpus: number;
  memoryMiB: number;
  /** Host directory with the container's root filesystem (unused when `layers` is set). */
  rootfs: string;
  /**
   * erofs layer blobs (host files, overlay lowerdir order: uppermost first): the rootfs is these,
   * attached read-only as virtio-blk devices and stacked in the guest under a tmpfs upper
   * (lib/vm/erofs_layers.ts). Absent: `rootfs` is the root.
   */
  layers?: string[];
  process: ProcessSpec;
  hostname: string;
  network: NetworkPlan;
  /** Container interfaces on the NICs (`ctr.network.N`; lib/vm/plan_ctr_network.ts). */
  ctrNetworks?: CtrNicPlan[];
  dns?: DnsSpec;
  /** Network namespace the VMM (and its providers) must run in (checked once, by the plan). */
  netns?: NetnsPath;
  /** Host directory for this VM's sockets, logs and scratch files; removed at the end. */
  stateDir: string;
  /** QEMU accelerator (`--accel`); libkrun ignores it. */
  accel?: Accel;
  /** libkrun library (`--libkrun`) and log level 0-5 (`--log-level`); QEMU ignores it. */
  libkrun?: { path?: string; logLevel?: number };
  /** OCI runtime spec crun applies in the guest (GuestConfig.oci); absent: chrooted workload. */
  oci?: Record<string, unknown>;
  /**
   * Host bind mounts shared into the VM (lib/vm/volumes.ts): present = boot with a volume share
   * (QEMU only), `binds` made into it before the guest starts, `mounts` applied by init.
   */
  volumes?: VolumePlan;
}

/** One host bind mount into the VM's volume share. */
export interface VolumeBind {
  /** Host source (absolute; a directory or a file). */
  source: string;
  /** Path inside the share (`<container id>/<n>`). */
  target: string;
  readOnly: boolean;
  recursive: boolean;
}

/** The volume share a VM boots with. */
export interface VolumePlan {
  binds: VolumeBind[];
  /** For a chrooted workload (no `oci`): what init binds into its root. */
  mounts: GuestVolumeMount[];
}

/** The running VM's volume share: later containers of a pod add their binds here. */
export interface VolumeShareHandle {
  /** Binds `binds` into the share (all or nothing). */
  bind(binds: VolumeBind[]): Promise<void>;
  /** Unmounts and removes everything under `<share>/<prefix>`. Idempotent. */
  release(prefix: string): Promise<void>;
}

/** How a VM ended. */
export interface VmExit {
  /** The workload's exit status as a shell reports it (128+n for signal n). */
  code: number;
  /** Set when nerdbox or the VM failed rather than the workload (exit 125). */
  error?: string;
  /** The kernel's OOM killer ended it (its container's memory limit). */
  oomKilled?: boolean;
}

/** A running VM. */
export interface VmHandle {
  /** PID of the VMM process on the host. */
  readonly pid: number;
  /** Delivers a signal to the workload inside the VM. */
  signal(signo: number): Promise<void>;
  /**
   * True when the workload runs as a crun container in the guest (a pod VM's sandbox or a
   * container added to it): it has a cgroup there that `update` and `pids` reach.
   */
  readonly crun?: boolean;
  /** Resolves once the VM is gone and every byte of workload output has been copied. */
  readonly exited: Promise<VmExit>;
  /** Stops the VM (if still running) and removes everything made for it. Idempotent. */
  dispose(): Promise<void>;
  /** Optional: resizes the workload's terminal (RESIZE frame); the shim's ResizePty uses it. */
  resize?(cols: number, rows: number): Promise<void>;
  /**
   * Optional: starts another process in the running guest (EXEC frame); the shim's Exec uses it.
   * `target` makes it a new container of the pod VM, or runs it inside one (crun mode).
   */
  exec?(process: ProcessSpec, stdio: VmStdio, target?: ExecTarget): Promise<VmProcess>;
  /**
   * Optional: the cgroup counters of the workload's container, or of `container` in a pod VM
   * (crun mode); the shim's Stats uses it.
   */
  stats?(container?: string): Promise<GuestCgroupStats>;
  /** Optional: the TCP ports something in the VM's network namespace listens on. */
  listening?(): Promise<number[]>;
  /**
   * Optional: applies new resource limits to the workload's container, or to `container` in a
   * pod VM (`crun update` in the guest; crun mode); the shim's Update uses it.
   */
  update?(resources: ResourcesUpdate, container?: string): Promise<void>;
  /** Optional: the guest pids in the workload's (or `container`'s) cgroup; the shim's Pids. */
  pids?(container?: string): Promise<number[]>;
  /** Optional: the VM's volume share (QEMU with VmPlan.volumes). */
  volumes?: VolumeShareHandle;
}

/** A process started in a running guest by VmHandle.exec. */
export interface VmProcess {
  /** The process's id as the host reports it (the guest protocol's process id, or its guest pid). */
  readonly pid: number;
  /** Delivers a signal to the process. */
  signal(signo: number): Promise<void>;
  /** Resolves with its exit once every byte of its output was copied. */
  readonly exited: Promise<VmExit>;
  /** Optional: resizes the process's terminal (RESIZE frame); the shim's ResizePty uses it. */
  resize?(cols: number, rows: number): Promise<void>;
}

/** Where the workload's stdio goes. Streams are written to and closed by the backend. */
export interface VmStdio {
  stdin?: ReadableStream<Uint8Array>;
  stdout: WritableStream<Uint8Array>;
  stderr: WritableStream<Uint8Array>;
  terminal?: boolean;
  /**
   * Optional: nerdbox's own warnings about the VM that do not end the run (e.g. its private
   * network provider died); the QEMU backend prints them on stderr when absent.
   */
  onWarning?: (message: string) => void;
}
