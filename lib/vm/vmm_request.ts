/**
 * The request the parent hands `nerdbox vmm` (a JSON file): versioned, and read back field by
 * field at the child's edge: every field is checked and a bad one is named with its value and
 * what was expected, so the child never runs on a request it does not understand.
 */
import { parseMac } from "../spec/mac.ts";
import { checkSocketPath } from "../spec/socket_path.ts";
import { validateNetnsPath } from "../net/netns.ts";
import type { PortSpec } from "../spec/types.ts";
import type { GuestExec } from "./libkrun_calls.ts";
import type { NetworkPlan, NicPlan, VmPlan } from "./types.ts";

/** The request format this program writes and reads. */
export const VMM_REQUEST_VERSION = 1;

/** What the parent hands `nerdbox vmm` (JSON). */
export interface VmmRequest {
  /** VMM_REQUEST_VERSION. */
  version: number;
  plan: VmPlan;
  guest: GuestExec;
  /** The parent's listening socket for the control channel. */
  channelSocket: string;
  /** Implicit console output file. */
  consoleLog: string;
  /** The VM's volume share directory (VmPlan.volumes), served as virtio-fs tag `volumes`. */
  volumesDir?: string;
  /** PID of the process that started the VMM (it dies with it). */
  parentPid: number;
}

/** A request field that is missing or wrong. */
export class VmmRequestError extends Error {
  /** Builds the error for `field` (a path such as `plan.network.nics[0].mac`). */
  constructor(readonly field: string, value: unknown, expected: string) {
    super(`field ${field}=${show(value)}: expected ${expected}`);
    this.name = "VmmRequestError";
  }
}

function show(v: unknown): string {
  const s = v === undefined ? "undefined" : JSON.stringify(v) ?? String(v);
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
}

type Obj = Record<string, unknown>;

function obj(v: unknown, f: string): Obj {
  if (typeof v !== "object" || v === null || Array.isArray(v)) {
    throw new VmmRequestError(f, v, "an object");
  }
  return v as Obj;
}
function str(v: unknown, f: string): string {
  if (typeof v !== "string") throw new VmmRequestError(f, v, "a string");
  return v;
}
function abs(v: unknown, f: string): string {
  const s = str(v, f);
  if (!s.startsWith("/") || s.includes("\0")) {
    throw new VmmRequestError(f, v, "an absolute path without NUL");
  }
  return s;
}
function int(v: unknown, f: string, min: number, max: number): number {
  if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > max) {
    throw new VmmRequestError(f, v, `an integer in ${min}..${max}`);
  }
  return v;
}
function bool(v: unknown, f: string): boolean {
  if (typeof v !== "boolean") throw new VmmRequestError(f, v, "true or false");
  return v;
}
function strs(v: unknown, f: string): string[] {
  if (!Array.isArray(v)) throw new VmmRequestError(f, v, "an array of strings");
  return v.map((x, i) => str(x, `${f}[${i}]`));
}
function paths(v: unknown, f: string): string[] {
  if (!Array.isArray(v)) throw new VmmRequestError(f, v, "an array of absolute paths");
  return v.map((x, i) => abs(x, `${f}[${i}]`));
}
function opt<T>(o: Obj, k: string, f: string, read: (v: unknown, f: string) => T): T | undefined {
  return o[k] === undefined ? undefined : read(o[k], `${f}.${k}`);
}
/** Runs a lib/spec parser, turning its error into a VmmRequestError naming the field. */
function parsed<T>(v: unknown, f: string, parse: (s: string) => T): T {
  const s = str(v, f);
  try {
    return parse(s);
  } catch (e) {
    throw new VmmRequestError(f, v, (e as Error).message.replace(/^expected /, ""));
  }
}

function port(v: unknown, f: string): PortSpec {
  const o = obj(v, f);
  const protocol = str(o.protocol, `${f}.protocol`);
  if (protocol !== "tcp" && protocol !== "udp") {
    throw new VmmRequestError(`${f}.protocol`, protocol, "tcp or udp");
  }
  const hostIp = opt(o, "hostIp", f, str);
  return {
    ...(hostIp !== undefined ? { hostIp } : {}),
    hostPort: int(o.hostPort, `${f}.hostPort`, 1, 65535),
    guestPort: int(o.guestPort, `${f}.guestPort`, 1, 65535),
    protocol,
  };
}

function nic(v: unknown, f: string): NicPlan {
  const o = obj(v, f);
  const mode = str(o.mode, `${f}.mode`);
  if (mode !== "unixgram" && mode !== "unixstream") {
    throw new VmmRequestError(`${f}.mode`, mode, "unixgram or unixstream");
  }
  const gateway4 = opt(o, "gateway4", f, str);
  return {
    name: str(o.name, `${f}.name`),
    socket: parsed(o.socket, `${f}.socket`, (s) => checkSocketPath(s, mode)),
    mode,
    mac: parsed(o.mac, `${f}.mac`, parseMac),
    features: int(o.features, `${f}.features`, 0, 0xffff_ffff),
    vfkit: bool(o.vfkit, `${f}.vfkit`),
    vnetHdr: bool(o.vnetHdr, `${f}.vnetHdr`),
    dhcp: bool(o.dhcp, `${f}.dhcp`),
    addrs: strs(o.addrs, `${f}.addrs`),
    defaultRoute: bool(o.defaultRoute, `${f}.defaultRoute`),
    ...(gateway4 !== undefined ? { gateway4 } : {}),
  };
}

function network(v: unknown, f: string): NetworkPlan {
  const o = obj(v, f);
  if (o.kind === "tsi") {
    if (!Array.isArray(o.ports)) throw new VmmRequestError(`${f}.ports`, o.ports, "an array");
    const publishAll = opt(o, "publishAll", f, bool);
    return {
      kind: "tsi",
      ports: o.ports.map((p, i) => port(p, `${f}.ports[${i}]`)),
      ...(publishAll !== undefined ? { publishAll } : {}),
    };
  }
  if (o.kind === "nics") {
    if (!Array.isArray(o.nics)) throw new VmmRequestError(`${f}.nics`, o.nics, "an array");
    return { kind: "nics", nics: o.nics.map((n, i) => nic(n, `${f}.nics[${i}]`)) };
  }
  throw new VmmRequestError(`${f}.kind`, o.kind, "tsi or nics (libkrun networks)");
}

function plan(v: unknown, f: string): VmPlan {
  const o = obj(v, f);
  if (o.backend !== "libkrun") throw new VmmRequestError(`${f}.backend`, o.backend, "libkrun");
  const p = obj(o.process, `${f}.process`);
  const dns = o.dns === undefined ? undefined : obj(o.dns, `${f}.dns`);
  const netns = opt(o, "netns", f, (x, g) => parsed(x, g, (s) => validateNetnsPath(s, g)));
  const lk = o.libkrun === undefined ? undefined : obj(o.libkrun, `${f}.libkrun`);
  const lkPath = lk && opt(lk, "path", `${f}.libkrun`, str);
  const logLevel = lk && opt(lk, "logLevel", `${f}.libkrun`, (x, g) => int(x, g, 0, 5));
  const accel = opt(o, "accel", f, str);
  if (accel !== undefined && accel !== "auto" && accel !== "kvm" && accel !== "tcg") {
    throw new VmmRequestError(`${f}.accel`, accel, "auto, kvm or tcg");
  }
  const domain = dns && opt(dns, "domain", `${f}.dns`, str);
  return {
    id: str(o.id, `${f}.id`),
    backend: "libkrun",
    cpus: int(o.cpus, `${f}.cpus`, 1, 255),
    memoryMiB: int(o.memoryMiB, `${f}.memoryMiB`, 1, 0xffff_ffff),
    rootfs: abs(o.rootfs, `${f}.rootfs`),
    ...(o.layers !== undefined ? { layers: paths(o.layers, `${f}.layers`) } : {}),
    process: {
      args: strs(p.args, `${f}.process.args`),
      env: strs(p.env, `${f}.process.env`),
      cwd: str(p.cwd, `${f}.process.cwd`),
      uid: int(p.uid, `${f}.process.uid`, 0, 0xffff_ffff),
      gid: int(p.gid, `${f}.process.gid`, 0, 0xffff_ffff),
      terminal: bool(p.terminal, `${f}.process.terminal`),
    },
    hostname: str(o.hostname, `${f}.hostname`),
    network: network(o.network, `${f}.network`),
    ...(dns
      ? {
        dns: {
          nameservers: strs(dns.nameservers, `${f}.dns.nameservers`),
          search: strs(dns.search, `${f}.dns.search`),
          options: strs(dns.options, `${f}.dns.options`),
          ...(domain !== undefined ? { domain } : {}),
        },
      }
      : {}),
    ...(netns !== undefined ? { netns } : {}),
    stateDir: abs(o.stateDir, `${f}.stateDir`),
    ...(accel !== undefined ? { accel } : {}),
    ...(lk
      ? {
        libkrun: {
          ...(lkPath !== undefined ? { path: lkPath } : {}),
          ...(logLevel !== undefined ? { logLevel } : {}),
        },
      }
      : {}),
    ...(o.oci !== undefined ? { oci: obj(o.oci, `${f}.oci`) } : {}),
  };
}

/** Checks a parsed request, field by field; throws VmmRequestError naming the first bad field. */
export function parseVmmRequest(v: unknown): VmmRequest {
  const o = obj(v, "request");
  if (o.version !== VMM_REQUEST_VERSION) {
    throw new VmmRequestError(
      "version",
      o.version,
      `${VMM_REQUEST_VERSION} (the request was written by another nerdbox version)`,
    );
  }
  const g = obj(o.guest, "guest");
  return {
    version: VMM_REQUEST_VERSION,
    plan: plan(o.plan, "plan"),
    guest: {
      rootDir: abs(g.rootDir, "guest.rootDir"),
      path: str(g.path, "guest.path"),
      args: strs(g.args, "guest.args"),
      env: strs(g.env, "guest.env"),
    },
    channelSocket: abs(o.channelSocket, "channelSocket"),
    consoleLog: abs(o.consoleLog, "consoleLog"),
    ...(o.volumesDir !== undefined ? { volumesDir: abs(o.volumesDir, "volumesDir") } : {}),
    parentPid: int(o.parentPid, "parentPid", 1, 0x7fff_ffff),
  };
}
