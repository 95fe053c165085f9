/**
 * The network part of a VmPlan, decided once: TSI (libkrun), a private passt or the pod interface
 * (QEMU, no network attached), or NICs on provider sockets in annotation order. MACs nerdbox makes
 * itself are generated here, the sockets nerdbox makes are checked against `sun_path` here, and
 * what a backend cannot carry (ports beside NICs, vnet_hdr) is refused here. Backends only
 * realise the result (lib/vm/qemu_net.ts, lib/vm/libkrun_calls.ts).
 */
import type { Cidr, NetworkSpec, PortSpec, SandboxSpec, SpecError } from "../spec/types.ts";
import { networkKey } from "../spec/annotations.ts";
import { generateMac } from "../spec/mac.ts";
import { formatPort } from "../spec/ports.ts";
import { socketPath } from "../spec/socket_path.ts";
import type { NetnsPath } from "../spec/netns_path.ts";
import { isHostNetns } from "../net/host_netns.ts";
import { probeSocket } from "../net/probe.ts";
import type { Backend, NetworkPlan, NicPlan } from "./types.ts";

/** The flag ports come from, named in errors. */
const PUBLISH = "--publish";

/** What the network decision needs besides the spec. */
export interface NetworkPlanInput {
  backend: Backend;
  stateDir: string;
  /** The checked netns the VMM runs in. */
  netns?: NetnsPath;
  /** What the libkrun that will run the plan supports (probed); absent = not checked here. */
  libkrunCaps?: { vnetHdr: boolean };
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

/** The QEMU-side socket of a unixgram NIC (QEMU binds it; the provider sends to it). */
export function dgramLocalSocket(stateDir: string, i: number) {
  return socketPath(`${stateDir}/n${i}.sock`, `network ${i}: state dir: local socket`);
}

function nicPlan(n: NetworkSpec, i: number, input: NetworkPlanInput): NicPlan {
  const first = i === 0;
  const v4 = n.addrs.find((a) => a.family === 4);
  const gateway4 = first && !n.dhcp && v4 ? firstHostAddress(v4) : undefined;
  const local = input.backend === "qemu" && n.mode === "unixgram";
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
    ...(local ? { localSocket: dgramLocalSocket(input.stateDir, i) } : {}),
  };
}

/** Checks published ports against what TSI (libkrun's port map) can express. */
function tsiPortErrors(ports: PortSpec[]): SpecError[] {
  const errors: SpecError[] = [];
  const guestSeen = new Map<number, PortSpec>();
  for (const p of ports) {
    const text = formatPort(p);
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
          `${formatPort(dup)}: libkrun's TSI port map takes each guest port once`,
      });
    } else guestSeen.set(p.guestPort, p);
  }
  return errors;
}

/** Where network `i` comes from, as errors name it. */
function networkWhere(i: number): string {
  return `${networkKey(i)} / --net #${i}`;
}

/** The error for a NIC asking for the vnet header from a libkrun that lacks the flag. */
export function vnetHdrError(i: number, n: { index?: number }): SpecError {
  return {
    annotation: networkWhere(n.index ?? i),
    field: "vnet_hdr",
    value: "true",
    message: `this libkrun does not support NET_FLAG_INCLUDE_VNET_HEADER (it rejected the flag ` +
      `with EINVAL when probed; libkrun 1.16 has no such flag): drop vnet_hdr (frames then ` +
      `carry no virtio-net header) or install a libkrun built with it`,
  };
}

/**
 * The one owner of vnet_hdr handling: the errors for NICs asking for the virtio-net header where
 * the backend cannot give it (QEMU never; libkrun when `libkrunVnetHdr` is false).
 */
export function vnetHdrErrors(
  backend: Backend,
  nics: Array<{ index?: number; vnetHdr: boolean }>,
  libkrunVnetHdr: boolean | undefined,
): SpecError[] {
  return nics.flatMap((n, i) => {
    if (!n.vnetHdr) return [];
    if (backend === "libkrun") return libkrunVnetHdr === false ? [vnetHdrError(i, n)] : [];
    return [{
      annotation: networkWhere(n.index ?? i),
      field: "vnet_hdr",
      value: "true",
      message: `QEMU's stream/dgram netdevs carry plain Ethernet frames without a virtio-net ` +
        `header; drop vnet_hdr or use --backend libkrun`,
    }];
  });
}

/**
 * True when the default network of a QEMU plan in a prepared netns uses the pod interface (tc
 * redirect) rather than a private passt: always, except when a published port asks for a
 * translation only passt can do (a host IP, or a host port other than the guest port), or a
 * test wants passt without DHCP.
 */
export function podMode(
  netns: string | undefined,
  ports: PortSpec[],
  opts: { passtNoDhcp?: boolean } = {},
): boolean {
  if (netns === undefined || opts.passtNoDhcp) return false;
  return ports.every((p) => p.hostIp === undefined && p.hostPort === p.guestPort);
}

/**
 * QEMU's default network (nothing attached): the pod interface of a prepared netns, or a private
 * passt with a generated MAC. The host's own netns (a host-network pod) is never taken over: such
 * a VM gets a private passt there (docs/kubernetes.md "Host-network pods").
 */
export function qemuDefaultNetwork(
  netns: NetnsPath | undefined,
  ports: PortSpec[],
  stateDir: string,
  opts: { passtNoDhcp?: boolean } = {},
): NetworkPlan {
  const hostNet = netns !== undefined && isHostNetns(netns);
  if (!hostNet && podMode(netns, ports, opts)) return { kind: "pod" };
  return {
    kind: "passt",
    mac: generateMac(),
    ports: ports.map((p) => ({ ...p })),
    socket: socketPath(`${stateDir}/passt/passt.sock`, "state dir: passt socket"),
    ...(opts.passtNoDhcp ? { noDhcp: true } : {}),
  };
}

/** Decides the network of a plan; refusals are returned as SpecErrors naming the flag. */
export function planNetwork(
  spec: SandboxSpec,
  input: NetworkPlanInput,
): { network: NetworkPlan; errors: SpecError[] } {
  const errors: SpecError[] = [];
  if (spec.networks.length === 0) {
    if (input.backend === "libkrun") errors.push(...tsiPortErrors(spec.ports));
    // Nothing is published in the host's netns unless asked; in a joined (pod) netns the netns
    // is the boundary, so every guest listener answers at the pod IP, as under QEMU.
    const publishAll = spec.publishAll ?? (spec.netns !== undefined && spec.ports.length === 0);
    if (input.backend === "qemu") {
      if (spec.publishAll) {
        errors.push({
          annotation: "io.containerd.nerdbox.publish",
          field: "",
          value: "all",
          message: `publishing every guest listener is libkrun's TSI behaviour; QEMU's private ` +
            `passt forwards only listed ports: list them (e.g. 8080:80) or use --backend libkrun`,
        });
      }
      return {
        network: qemuDefaultNetwork(input.netns, spec.ports, input.stateDir),
        errors,
      };
    }
    return {
      network: {
        kind: "tsi",
        ports: spec.ports.map((p) => ({ ...p })),
        ...(publishAll ? { publishAll: true } : {}),
      },
      errors,
    };
  }
  if (spec.ports.length > 0) {
    const list = spec.ports.map(formatPort).join(", ");
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
  errors.push(...vnetHdrErrors(input.backend, spec.networks, input.libkrunCaps?.vnetHdr));
  return {
    network: { kind: "nics", nics: spec.networks.map((n, i) => nicPlan(n, i, input)) },
    errors,
  };
}

/** Where network `i` of a plan comes from, for messages: its flag or its annotation. */
function networkSource(i: number): string {
  return `network ${i} is --net #${i} or annotation ${networkKey(i)}`;
}

/**
 * Checks that every provider a NIC plan names is up, a UNIX socket of its mode, and answering
 * (QEMU neither reconnects to a stream socket that appears later nor notices that its dgram
 * peer is missing). Throws an Error naming the network and its source.
 */
export async function checkProviders(nics: NicPlan[]): Promise<void> {
  for (const [i, nic] of nics.entries()) {
    const name = `network ${i}`;
    const sock = JSON.stringify(nic.socket);
    const s = await Deno.lstat(nic.socket).catch(() => null);
    if (!s?.isSocket) {
      throw new Error(
        `${name}: socket ${sock}: ${
          !s
            ? "does not exist"
            : s.isSymlink
            ? "is not a UNIX socket (a symlink: give the socket itself)"
            : "is not a UNIX socket"
        }; start the provider first (mode=${nic.mode}; ${networkSource(i)})`,
      );
    }
    const probe = await probeSocket(nic.socket, nic.mode);
    if (!probe.ok) {
      throw new Error(
        `${name}: socket ${sock}: ${probe.message} (mode=${nic.mode}; ${networkSource(i)})`,
      );
    }
  }
}
