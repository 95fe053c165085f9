/**
 * The typed sandbox description. Everything a user can say (flags, annotations, OCI config.json,
 * CNI results) is parsed into these shapes at the edge (lib/spec/) and trusted everywhere else.
 * Plain data only: every value here is JSON-serialisable. Checked values carry a brand (Mac,
 * SocketPath) so that what was parsed once is not parsed again downstream.
 */
import type { Mac } from "./mac.ts";
import type { SocketPath } from "./socket_path.ts";

/** Socket type a network provider serves. */
export type NetMode = "unixgram" | "unixstream";

/** An address with its prefix length, e.g. 192.168.127.2/24. */
export interface Cidr {
  /** 4 or 6. */
  family: 4 | 6;
  /** Canonical text form of the address (no prefix). */
  address: string;
  /** Prefix length (0–32 or 0–128). */
  prefix: number;
}

/** One VM NIC, from `io.containerd.nerdbox.network.N` or `nerdbox run --net`. */
export interface NetworkSpec {
  /** N of the annotation (or the position of `--net`); networks are ordered by it. */
  index: number;
  /** Absolute path of the provider's UNIX socket (fits sun_path for its mode). */
  socket: SocketPath;
  mode: NetMode;
  /** Lower-case `aa:bb:cc:dd:ee:ff`. */
  mac: Mac;
  /** IPv4 address by DHCPv4. Never together with `addrs`. */
  dhcp: boolean;
  /** Static addresses, at most one per family. */
  addrs: Cidr[];
  /** virtio-net feature bits. */
  features: number;
  /** The same features by name, in bit order. */
  featureNames: string[];
  /** Send the VFKT datagram after connecting (unixgram only). */
  vfkit: boolean;
  /** Include the virtio-net header in frames (needs libkrun support). */
  vnetHdr: boolean;
}

/** A published port (TSI port map under libkrun, passt forward under QEMU). */
export interface PortSpec {
  /** Host address to bind, when given (`IP:HOST:GUEST`). */
  hostIp?: string;
  hostPort: number;
  guestPort: number;
  protocol: "tcp" | "udp";
}

/** VM size. */
export interface ResourceSpec {
  cpus: number;
  memoryMiB: number;
}

/** One container interface inside the VM, from `io.containerd.nerdbox.ctr.network.N`. */
export interface CtrNetworkSpec {
  index: number;
  /** MAC of the VM network this attaches to (must match a NetworkSpec). */
  vmmac: Mac;
  mac?: Mac;
  addrs: Cidr[];
  /** Interface name; may contain `%d`. */
  ifname?: string;
  /** Default gateways, at most one per family. */
  gateways: string[];
}

/** resolv.conf content. */
export interface DnsSpec {
  nameservers: string[];
  search: string[];
  options: string[];
  /** Local domain (`domain` line), when given. */
  domain?: string;
}

/** The workload. */
export interface ProcessSpec {
  args: string[];
  /** `KEY=VALUE` entries. */
  env: string[];
  cwd: string;
  uid: number;
  gid: number;
  /** Supplementary groups (OCI `process.user.additionalGids`); absent = none. */
  additionalGids?: number[];
  terminal: boolean;
}

/** Which VMM runs the sandbox. */
export type BackendChoice = "auto" | "libkrun" | "qemu";

/** Everything nerdbox needs to know to run one sandbox. */
export interface SandboxSpec {
  id: string;
  /** Host directory holding the container's root filesystem. */
  rootfs: string;
  process: ProcessSpec;
  hostname: string;
  resources: ResourceSpec;
  /** VM NICs in annotation order; the first is the default gateway. Empty = TSI. */
  networks: NetworkSpec[];
  ctrNetworks: CtrNetworkSpec[];
  ports: PortSpec[];
  /**
   * Publish every port the guest listens on (libkrun TSI without a port map): true with
   * `io.containerd.nerdbox.publish=all`, false when `none`, a list or `--publish` was given;
   * absent = not asked (the plan then publishes all only inside a joined netns: docs/libkrun.md).
   */
  publishAll?: boolean;
  dns?: DnsSpec;
  /** Network namespace the VMM runs in (prepared by a caller or by CNI). */
  netns?: string;
  backend: BackendChoice;
}

/** One problem with one field of one annotation or flag. */
export interface SpecError {
  /** Annotation key or flag name, e.g. `io.containerd.nerdbox.network.0` or `--net`. */
  annotation: string;
  /** Field within it (`mac`, `features`, …), or "" for the whole value. */
  field: string;
  /** The offending value as given. */
  value: string;
  /** What was expected. */
  message: string;
}

/** Thrown when input does not parse; carries every error found, not just the first. */
export class SpecValidationError extends Error {
  /** Every problem found. */
  readonly errors: SpecError[];
  constructor(errors: SpecError[]) {
    super(errors.map(formatSpecError).join("\n"));
    this.name = "SpecValidationError";
    this.errors = errors;
  }
}

/** One-line human form of a SpecError: `<annotation>: <field>="<value>": <message>`. */
export function formatSpecError(e: SpecError): string {
  const where = e.field ? `${e.annotation}: ${e.field}=${JSON.stringify(e.value)}` : e.annotation;
  return `${where}: ${e.message}`;
}
