/**
 * The one schema shared by the host and guest/ across the VM boundary: the guest configuration
 * and the framed control channel: a virtio-console port named `nerdbox.ctl` under both backends
 * (QEMU: virtio-serial + virtserialport; libkrun: krun_add_console_port_inout), so that vsock
 * exists only with TSI.
 *
 * Frame: u32 BE payload length | u8 type | u32 BE process id (0 = the init workload) | payload.
 * JSON payloads are UTF-8 JSON; data payloads are raw bytes.
 */
import type { ResourcesUpdate } from "./linux_resources.ts";

/** Bumped whenever a message or field changes meaning. */
export const GUEST_PROTOCOL_VERSION = 1;

/** Name of the virtio-console port carrying the channel (guest: /sys/class/virtio-ports/*\/name). */
export const CHANNEL_PORT_NAME = "nerdbox.ctl";
/** Largest payload either side accepts; bigger frames are a protocol error. */
export const MAX_FRAME_PAYLOAD = 1 << 20;
/** Bytes before the payload. */
export const FRAME_HEADER_SIZE = 9;

/** Message types. Host→guest below 0x40, guest→host from 0x40. */
export const MsgType = {
  /** host→guest JSON GuestConfig (the first message). */
  CONFIG: 0x01,
  /** host→guest stdin bytes for a process. */
  STDIN: 0x02,
  /** host→guest: the process's stdin is closed. */
  STDIN_EOF: 0x03,
  /** host→guest JSON `{signo}`. */
  SIGNAL: 0x04,
  /** host→guest JSON `{cols, rows}`. */
  RESIZE: 0x05,
  /** host→guest JSON ExecRequest: start another process (process id in the header). */
  EXEC: 0x06,
  /** host→guest JSON GuestQuery: a question to init (request id in the header). */
  QUERY: 0x07,
  /** guest→host JSON `{version}`: init is up and waits for CONFIG. */
  HELLO: 0x40,
  /** guest→host stdout bytes. */
  STDOUT: 0x41,
  /** guest→host stderr bytes. */
  STDERR: 0x42,
  /**
   * guest→host JSON ExitReport `{code, oomKilled?}`: the process ended (128+n for signal n);
   * `oomKilled` when the kernel's OOM killer ended its container.
   */
  EXIT: 0x43,
  /** guest→host JSON GuestError: setup failed; the VM ends. */
  ERROR: 0x44,
  /** guest→host JSON GuestNetworkReport: what the network looks like once configured. */
  NETWORK: 0x45,
  /** guest→host UTF-8 log line from init. */
  LOG: 0x46,
  /** guest→host JSON `{pid}`: the process started. */
  STARTED: 0x47,
  /** guest→host JSON GuestReply to the QUERY with the same id. */
  REPLY: 0x48,
} as const;

/** One of MsgType's values. */
export type MsgTypeValue = typeof MsgType[keyof typeof MsgType];

/** One decoded frame. */
export interface Frame {
  type: number;
  proc: number;
  payload: Uint8Array;
}

/** How the guest finds and mounts the container's root filesystem. */
export type GuestRootfs =
  | { kind: "virtiofs"; tag: string }
  | { kind: "block"; device: string; fstype: "ext4" | "erofs" }
  /** erofs layer devices, uppermost first, stacked by the guest under a writable upper. */
  | { kind: "layers"; devices: string[] };

/** One NIC the guest must configure. */
export interface GuestNetwork {
  /** Lower-case MAC; the guest finds the interface by it. */
  mac: string;
  dhcp: boolean;
  /** Static CIDRs. */
  addrs: string[];
  /** Install the default route through this NIC. */
  defaultRoute: boolean;
  /** IPv4 gateway of the default route (when `defaultRoute`); wins over a DHCP lease's router. */
  gateway4?: string;
  mtu?: number;
  /** Rename the NIC to this (`%d` filled in by the kernel) while it is down (ctr.network). */
  ifname?: string;
  /** Give the NIC this MAC while it is down (ctr.network); DHCP then uses it too. */
  setMac?: string;
  /** Install the IPv6 default route via this gateway through this NIC (ctr.network gw). */
  gateway6?: string;
}

/** The workload or an exec'd process. */
export interface GuestProcess {
  args: string[];
  /** `KEY=VALUE` entries. */
  env: string[];
  cwd: string;
  uid: number;
  gid: number;
  /** Supplementary groups; applied where crun runs the process (an OCI container). */
  additionalGids?: number[];
  terminal: boolean;
}

/** Everything the guest init needs. */
export interface GuestConfig {
  version: typeof GUEST_PROTOCOL_VERSION;
  hostname: string;
  rootfs: GuestRootfs;
  process: GuestProcess;
  networks: GuestNetwork[];
  dns?: { nameservers: string[]; search: string[]; options: string[]; domain?: string };
  /** How long DHCP may take before it is an error. */
  dhcpTimeoutMs: number;
  /**
   * The OCI runtime spec (config.json) to apply with crun inside the guest (docs/kubernetes.md):
   * the guest mounts `rootfs`, points `root.path` at it and runs `crun run` as the workload
   * instead of chrooting. Absent: the workload runs chrooted, as `process` says.
   */
  oci?: Record<string, unknown>;
  /** The VM's volume share (host bind mounts), mounted at GUEST_VOLUMES_DIR before the rootfs. */
  volumes?: GuestVolumes;
}

/** Where the guest mounts the VM's volume share (virtio-fs, tag GuestVolumes.tag). */
export const GUEST_VOLUMES_DIR = "/run/nerdbox/volumes";

/** The VM's volume share: the host binds each container's bind-mount sources into it. */
export interface GuestVolumes {
  /** virtio-fs tag of the share. */
  tag: string;
  /**
   * Bind mounts init makes into a chrooted workload's root (no `oci`); with `oci` the spec's
   * bind mounts already point into GUEST_VOLUMES_DIR and crun makes them.
   */
  mounts: GuestVolumeMount[];
}

/** One bind mount from the volume share into the container root. */
export interface GuestVolumeMount {
  /** Path inside the share (`<container id>/<n>`, no `..`). */
  source: string;
  /** Absolute destination in the container. */
  destination: string;
  readOnly: boolean;
  /** rbind (mounts below the source come along) rather than bind. */
  recursive: boolean;
}

/** Guest path of crun, the OCI executor, on the runtime disk. */
export const GUEST_CRUN_PATH = "/opt/nerdbox/bin/crun";
/** Guest directory of crun's shared libraries (its LD_LIBRARY_PATH). */
export const GUEST_CRUN_LIB_DIR = "/opt/nerdbox/lib";

/** Distinct guest-side failures, reported in ERROR frames. */
export type GuestErrorKind =
  | "config"
  | "mac_not_found"
  | "dhcp_timeout"
  | "netlink"
  | "rootfs"
  | "exec";

/** An ERROR frame's payload. */
export interface GuestError {
  kind: GuestErrorKind;
  message: string;
  /** Exit status when it differs from GUEST_EXIT[kind] (exec: 126 when not executable). */
  code?: number;
}

/**
 * A container to create and run in the pod VM with crun: its process is the EXEC's process (its
 * stdio, signals and exit), its own rootfs (an overlay on `rootfs.path`) and mount namespace, the
 * VM's network shared.
 */
export interface GuestContainerRequest {
  /** Container id ([A-Za-z0-9][A-Za-z0-9_.-]{0,127}), unique in the VM. */
  id: string;
  /** Its OCI runtime spec (root.path is replaced; its process runs). */
  spec: Record<string, unknown>;
  /** Its root filesystem: a directory the guest sees (read-only lower of an overlay). */
  rootfs: { kind: "path"; path: string };
}

/**
 * Where an EXEC runs: a new container, inside a running container (by id), or (`guest`) in init's
 * own root outside every container, for the host's own chores (unpacking a rootfs it streams in).
 * `dial` is no process at all: init connects to that TCP port on the VM's loopback and the
 * session's stdin/stdout carry the connection's bytes (port forwarding); args are not run.
 */
export interface ExecTarget {
  container?: GuestContainerRequest;
  in?: string;
  guest?: boolean;
  dial?: number;
}

/**
 * An EXEC frame's payload: the process to start (its id is the frame's process id); with
 * `container` it is a new container's process, with `in` it runs inside that container.
 */
export type ExecRequest = GuestProcess & ExecTarget;

/** Guest init exit statuses for setup failures (the VM ends with them when no channel works). */
export const GUEST_EXIT: Record<GuestErrorKind, number> = {
  config: 120,
  mac_not_found: 121,
  dhcp_timeout: 122,
  netlink: 123,
  rootfs: 124,
  exec: 127,
};

/** An EXIT frame's payload. */
export interface ExitReport {
  code: number;
  /** The kernel's OOM killer ended the process's container (its cgroup's memory limit). */
  oomKilled?: boolean;
}

/** crun's container id for the VM's first container (the workload; a pod's sandbox). */
export const GUEST_WORKLOAD_ID = "workload";

/**
 * A QUERY frame's payload: `stats` asks for a container's cgroup counters (crun mode), `listening`
 * for the TCP ports something in the VM's network namespace listens on, `update` to apply new
 * resource limits to a container (`crun update`), `pids` for the guest pids in its cgroup.
 */
export type GuestQuery =
  | { kind: "stats"; container: string }
  | { kind: "listening" }
  | { kind: "update"; container: string; resources: ResourcesUpdate }
  | { kind: "pids"; container: string };

/**
 * A container's cgroup v2 counters as the guest read them: flat-keyed files (`cpu.stat`,
 * `memory.stat`, `memory.events`) as maps, single-value files (`memory.current`, `memory.max`,
 * `memory.peak`, `memory.swap.current`, `memory.swap.max`, `pids.current`, `pids.max`) as a
 * number or "max". A file the guest kernel does not have is absent.
 */
export interface GuestCgroupStats {
  flat: Record<string, Record<string, number>>;
  single: Record<string, number | "max">;
}

/**
 * Why a QUERY has no answer: the query or its values are wrong (`invalid`), the container is not
 * in the VM (`not_found`), the VM cannot do it (`unsupported`: no crun), or it failed (`failed`).
 */
export type GuestQueryFailure = "invalid" | "not_found" | "unsupported" | "failed";

/** A REPLY payload: the answer to the query's kind, or why there is none. */
export type GuestReply =
  | { stats: GuestCgroupStats }
  | { listening: number[] }
  | { updated: true }
  | { pids: number[] }
  | { error: string; reason?: GuestQueryFailure };

/** A NETWORK frame's payload. */
export interface GuestNetworkReport {
  interfaces: Array<{ name: string; mac: string; addrs: string[]; mtu: number }>;
  defaultGateway?: string;
  nameservers: string[];
}

/** Encodes one frame. */
export function encodeFrame(type: number, proc: number, payload: Uint8Array): Uint8Array {
  if (payload.length > MAX_FRAME_PAYLOAD) {
    throw new RangeError(`frame payload ${payload.length} bytes exceeds ${MAX_FRAME_PAYLOAD}`);
  }
  const out = new Uint8Array(FRAME_HEADER_SIZE + payload.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, payload.length);
  view.setUint8(4, type);
  view.setUint32(5, proc);
  out.set(payload, FRAME_HEADER_SIZE);
  return out;
}

/** Encodes a frame with a JSON payload. */
export function encodeJsonFrame(type: number, proc: number, value: unknown): Uint8Array {
  return encodeFrame(type, proc, new TextEncoder().encode(JSON.stringify(value)));
}

/**
 * Incremental frame decoder: push bytes, take complete frames. Linear in the bytes pushed, however
 * they are chunked: a header is gathered in a 9-byte buffer, then the payload is copied once into a
 * buffer of exactly its length. An oversized length is refused as soon as the header is complete,
 * before any of its payload is buffered; the decoder then stays failed (every later push throws).
 */
export class FrameDecoder {
  #header = new Uint8Array(FRAME_HEADER_SIZE);
  #headerLen = 0;
  #payload: Uint8Array | null = null;
  #payloadLen = 0;
  #type = 0;
  #proc = 0;
  #failed: RangeError | null = null;

  /** Appends bytes and returns every complete frame now available. */
  push(chunk: Uint8Array): Frame[] {
    if (this.#failed) throw this.#failed;
    const frames: Frame[] = [];
    let off = 0;
    while (off < chunk.length) {
      if (this.#payload === null) {
        const n = Math.min(FRAME_HEADER_SIZE - this.#headerLen, chunk.length - off);
        this.#header.set(chunk.subarray(off, off + n), this.#headerLen);
        this.#headerLen += n;
        off += n;
        if (this.#headerLen < FRAME_HEADER_SIZE) break;
        this.#startPayload();
      } else {
        const n = Math.min(this.#payload.length - this.#payloadLen, chunk.length - off);
        this.#payload.set(chunk.subarray(off, off + n), this.#payloadLen);
        this.#payloadLen += n;
        off += n;
      }
      if (this.#payload !== null && this.#payloadLen === this.#payload.length) {
        frames.push({ type: this.#type, proc: this.#proc, payload: this.#payload });
        this.#payload = null;
        this.#payloadLen = 0;
        this.#headerLen = 0;
      }
    }
    return frames;
  }

  /** Reads the complete header; refuses an oversized length before allocating its payload. */
  #startPayload(): void {
    const view = new DataView(this.#header.buffer);
    const len = view.getUint32(0);
    if (len > MAX_FRAME_PAYLOAD) {
      this.#failed = new RangeError(`frame payload ${len} bytes exceeds ${MAX_FRAME_PAYLOAD}`);
      throw this.#failed;
    }
    this.#type = view.getUint8(4);
    this.#proc = view.getUint32(5);
    this.#payload = new Uint8Array(len);
    this.#payloadLen = 0;
  }
}

/** Decodes a JSON payload. */
export function decodeJson<T>(payload: Uint8Array): T {
  return JSON.parse(new TextDecoder().decode(payload)) as T;
}
