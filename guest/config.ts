/** Parses and checks the CONFIG payload into a GuestConfig; every error names the field. */
import {
  GUEST_PROTOCOL_VERSION,
  type GuestConfig,
  type GuestNetwork,
  type GuestProcess,
  type GuestRootfs,
  type GuestVolumeMount,
  type GuestVolumes,
} from "../lib/guest_protocol.ts";
import { type Cidr, parseCidr, parseIPv4, parseIPv6, parseMac } from "./ip.ts";

/** A bad GuestConfig (GuestErrorKind "config"). */
export class ConfigError extends Error {
  /** Creates the error for `field` holding `value`, expecting `expected`. */
  constructor(field: string, value: unknown, expected: string) {
    super(`GuestConfig.${field} = ${JSON.stringify(value)}: expected ${expected}`);
    this.name = "ConfigError";
  }
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === "object" && v !== null && !Array.isArray(v);

function str(o: Obj, f: string, path: string): string {
  if (typeof o[f] !== "string") throw new ConfigError(`${path}${f}`, o[f], "a string");
  return o[f] as string;
}

function strs(o: Obj, f: string, path: string): string[] {
  const v = o[f];
  if (!Array.isArray(v) || v.some((x) => typeof x !== "string")) {
    throw new ConfigError(`${path}${f}`, v, "an array of strings");
  }
  return v as string[];
}

function int(o: Obj, f: string, path: string, min: number, max: number): number {
  const v = o[f];
  if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > max) {
    throw new ConfigError(`${path}${f}`, v, `an integer in ${min}..${max}`);
  }
  return v;
}

function bool(o: Obj, f: string, path: string): boolean {
  if (typeof o[f] !== "boolean") throw new ConfigError(`${path}${f}`, o[f], "true or false");
  return o[f] as boolean;
}

function rootfs(v: unknown): GuestRootfs {
  if (!isObj(v)) throw new ConfigError("rootfs", v, "an object");
  if (v.kind === "virtiofs") return { kind: "virtiofs", tag: str(v, "tag", "rootfs.") };
  if (v.kind === "block") {
    const device = str(v, "device", "rootfs.");
    if (!device.startsWith("/dev/")) throw new ConfigError("rootfs.device", device, "a /dev/ path");
    if (v.fstype !== "ext4" && v.fstype !== "erofs") {
      throw new ConfigError("rootfs.fstype", v.fstype, '"ext4" or "erofs"');
    }
    return { kind: "block", device, fstype: v.fstype };
  }
  if (v.kind === "layers") {
    const devices = v.devices;
    if (!Array.isArray(devices) || devices.length === 0 || devices.length > 128) {
      throw new ConfigError("rootfs.devices", devices, "1-128 /dev/ paths");
    }
    for (const d of devices) {
      if (typeof d !== "string" || !/^\/dev\/[A-Za-z0-9_./-]+$/.test(d) || d.includes("..")) {
        throw new ConfigError("rootfs.devices", d, "a /dev/ path");
      }
    }
    return { kind: "layers", devices: devices as string[] };
  }
  throw new ConfigError("rootfs.kind", v.kind, '"virtiofs", "block" or "layers"');
}

/** Checks a GuestProcess (the workload's or an EXEC request's); `path` prefixes field names. */
export function parseProcess(v: unknown, path = "process."): GuestProcess {
  const name = path.replace(/\.$/, "");
  if (!isObj(v)) throw new ConfigError(name, v, "an object");
  const args = strs(v, "args", path);
  if (args.length === 0) throw new ConfigError(`${path}args`, args, "at least the program");
  const groups = v.additionalGids;
  if (
    groups !== undefined && (!Array.isArray(groups) || groups.length > 65536 ||
      groups.some((g) => typeof g !== "number" || !Number.isInteger(g) || g < 0 || g > 0xfffffffe))
  ) {
    throw new ConfigError(`${path}additionalGids`, groups, "an array of integers in 0..4294967294");
  }
  return {
    args,
    env: strs(v, "env", path),
    cwd: str(v, "cwd", path),
    uid: int(v, "uid", path, 0, 0xfffffffe),
    gid: int(v, "gid", path, 0, 0xfffffffe),
    ...(groups !== undefined ? { additionalGids: groups as number[] } : {}),
    terminal: bool(v, "terminal", path),
  };
}

/** A network as the guest uses it: what the host sent, and its values parsed once, here. */
export interface GuestNic {
  /** The fields as sent (MACs lower-cased): for reports and messages. */
  sent: GuestNetwork;
  /** The MAC the NIC has when the VM starts. */
  mac: Uint8Array<ArrayBuffer>;
  /** The MAC to give it (ctr.network `mac`), if any. */
  setMac?: Uint8Array<ArrayBuffer>;
  addrs: Cidr[];
  gateway4?: Uint8Array<ArrayBuffer>;
  gateway6?: Uint8Array<ArrayBuffer>;
}

/** `parse(value)`, or a ConfigError naming `field` and saying what was `expected`. */
function parsed<T>(parse: (s: string) => T, value: string, field: string, expected: string): T {
  try {
    return parse(value);
  } catch {
    throw new ConfigError(field, value, expected);
  }
}

const MAC_TEXT = "a MAC aa:bb:cc:dd:ee:ff";

/** Parses one of CONFIG's `networks`; errors name the field. */
export function parseNetwork(v: unknown, i: number): GuestNic {
  const p = `networks[${i}].`;
  if (!isObj(v)) throw new ConfigError(`networks[${i}]`, v, "an object");
  const sent: GuestNetwork = {
    mac: str(v, "mac", p).toLowerCase(),
    dhcp: bool(v, "dhcp", p),
    addrs: strs(v, "addrs", p),
    defaultRoute: bool(v, "defaultRoute", p),
  };
  const nic: GuestNic = {
    sent,
    mac: parsed(parseMac, sent.mac, `${p}mac`, MAC_TEXT),
    addrs: sent.addrs.map((a, j) => parsed(parseCidr, a, `${p}addrs[${j}]`, "an ADDRESS/PREFIX")),
  };
  if (v.gateway4 !== undefined) {
    sent.gateway4 = str(v, "gateway4", p);
    nic.gateway4 = parsed(parseIPv4, sent.gateway4, `${p}gateway4`, "an IPv4 address");
  }
  if (v.mtu !== undefined) sent.mtu = int(v, "mtu", p, 68, 65535);
  if (v.ifname !== undefined) {
    const name = str(v, "ifname", p);
    if (!validIfname(name)) {
      throw new ConfigError(`${p}ifname`, name, "an interface name (1-15 bytes, one %d at most)");
    }
    sent.ifname = name;
  }
  if (v.setMac !== undefined) {
    sent.setMac = str(v, "setMac", p).toLowerCase();
    nic.setMac = parsed(parseMac, sent.setMac, `${p}setMac`, MAC_TEXT);
  }
  if (v.gateway6 !== undefined) {
    sent.gateway6 = str(v, "gateway6", p);
    nic.gateway6 = parsed(parseIPv6, sent.gateway6, `${p}gateway6`, "an IPv6 address");
  }
  return nic;
}

/** An interface name as the kernel's dev_valid_name takes it, `%` only as one `%d`. */
function validIfname(name: string): boolean {
  const bytes = new TextEncoder().encode(name).length;
  // deno-lint-ignore no-control-regex
  if (bytes < 1 || bytes > 15 || /[/:\s\u0000-\u001f\u007f]/.test(name)) return false;
  if (name === "." || name === "..") return false;
  const percents = name.split("%").length - 1;
  return percents === 0 || (percents === 1 && name.includes("%d"));
}

const SHARE_PATH_RE = /^[A-Za-z0-9_.-]+(\/[A-Za-z0-9_.-]+)*$/;

/** Parses CONFIG's `volumes`; errors name the field. */
export function parseVolumes(v: unknown): GuestVolumes {
  if (!isObj(v)) throw new ConfigError("volumes", v, "an object");
  if (typeof v.tag !== "string" || !/^[A-Za-z0-9_.-]{1,36}$/.test(v.tag)) {
    throw new ConfigError("volumes.tag", v.tag, "a virtio-fs tag");
  }
  if (!Array.isArray(v.mounts)) throw new ConfigError("volumes.mounts", v.mounts, "an array");
  const mounts = v.mounts.map((m, i): GuestVolumeMount => {
    const p = `volumes.mounts[${i}].`;
    if (!isObj(m)) throw new ConfigError(`volumes.mounts[${i}]`, m, "an object");
    const src = m.source;
    if (
      typeof src !== "string" || !SHARE_PATH_RE.test(src) ||
      src.split("/").some((s) => s === "." || s === "..")
    ) {
      throw new ConfigError(`${p}source`, src, "a relative path in the share without . or ..");
    }
    const dst = m.destination;
    if (typeof dst !== "string" || !dst.startsWith("/") || dst.split("/").includes("..")) {
      throw new ConfigError(`${p}destination`, dst, "an absolute path without ..");
    }
    for (const k of ["readOnly", "recursive"] as const) {
      if (typeof m[k] !== "boolean") throw new ConfigError(`${p}${k}`, m[k], "true or false");
    }
    return {
      source: src,
      destination: dst,
      readOnly: m.readOnly as boolean,
      recursive: m.recursive as boolean,
    };
  });
  return { tag: v.tag, mounts };
}

/** CONFIG as the guest uses it: GuestConfig with its networks parsed (GuestNic). */
export type GuestSetup = Omit<GuestConfig, "networks"> & { networks: GuestNic[] };

/** Parses the CONFIG payload text. */
export function parseConfig(text: string): GuestSetup {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (err) {
    throw new ConfigError(
      "",
      text.slice(0, 80),
      `JSON (${err instanceof Error ? err.message : err})`,
    );
  }
  if (!isObj(v)) throw new ConfigError("", v, "an object");
  if (v.version !== GUEST_PROTOCOL_VERSION) {
    throw new ConfigError("version", v.version, `${GUEST_PROTOCOL_VERSION}`);
  }
  if (!Array.isArray(v.networks)) throw new ConfigError("networks", v.networks, "an array");
  const cfg: GuestSetup = {
    version: GUEST_PROTOCOL_VERSION,
    hostname: str(v, "hostname", ""),
    rootfs: rootfs(v.rootfs),
    process: parseProcess(v.process),
    networks: v.networks.map(parseNetwork),
    dhcpTimeoutMs: int(v, "dhcpTimeoutMs", "", 1, 3_600_000),
  };
  if (v.dns !== undefined) {
    if (!isObj(v.dns)) throw new ConfigError("dns", v.dns, "an object");
    cfg.dns = {
      nameservers: strs(v.dns, "nameservers", "dns."),
      search: strs(v.dns, "search", "dns."),
      options: strs(v.dns, "options", "dns."),
    };
    if (v.dns.domain !== undefined) cfg.dns.domain = str(v.dns, "domain", "dns.");
  }
  if (v.oci !== undefined) {
    if (!isObj(v.oci) || !isObj(v.oci.process)) {
      throw new ConfigError("oci", v.oci, "an OCI runtime spec object with a process");
    }
    cfg.oci = v.oci;
  }
  if (v.volumes !== undefined) cfg.volumes = parseVolumes(v.volumes);
  return cfg;
}
