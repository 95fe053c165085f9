/**
 * Typed CNI results. Parses what a plugin printed on ADD (cniVersion 0.1.0–1.0.0: the legacy
 * `ip4`/`ip6` shape and the `interfaces`/`ips` shape) into plain data, checking bounds
 * (addresses, prefixes, MACs, interface indexes). The raw JSON is kept for prevResult chaining.
 */
import { isIPv4, isIPv6 } from "node:net";
import type { Cidr, DnsSpec } from "../spec/types.ts";

/** One interface the plugins created or touched. */
export interface CniInterface {
  name: string;
  mac?: string;
  /** Netns path when the interface is inside the sandbox; absent for host interfaces. */
  sandbox?: string;
  mtu?: number;
}

/** One address assigned to an interface. */
export interface CniIpConfig {
  address: Cidr;
  gateway?: string;
  /** Index into `interfaces`. */
  interface?: number;
}

/** One route to add in the sandbox. */
export interface CniRoute {
  dst: Cidr;
  gw?: string;
}

/** A parsed plugin result. */
export interface CniResult {
  cniVersion: string;
  interfaces: CniInterface[];
  ips: CniIpConfig[];
  routes: CniRoute[];
  dns: DnsSpec;
  /** The result exactly as the plugin printed it (passed on as prevResult). */
  raw: Record<string, unknown>;
}

/** A result that does not have the CNI result shape. */
export class CniResultError extends Error {
  constructor(where: string, field: string, message: string) {
    super(`CNI result from ${where}: ${field}: ${message}`);
    this.name = "CniResultError";
  }
}

const MAC_RE = /^[0-9a-fA-F]{2}(?::[0-9a-fA-F]{2}){5,19}$/;

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Why `ip` (already isIPv4/isIPv6) cannot stand in a CNI result, or null when it can. */
function refusal(ip: string): string | null {
  // node:net accepts an IPv6 zone id ("fe80::1%eth0"); it names an interface of the plugin's
  // host, not an address, and is not valid in a CNI result.
  if (ip.includes("%")) {
    return `${JSON.stringify(ip)} has an IPv6 zone id (%…), which a CNI result IP cannot have`;
  }
  return null;
}

/** The canonical text of a checked address (IPv6 compressed, lower case), or null. */
function canonical(ip: string): string | null {
  if (!isIPv6(ip)) return ip;
  try {
    return new URL(`http://[${ip}]/`).hostname.slice(1, -1);
  } catch {
    return null;
  }
}

/** Parses `a.b.c.d/n` or `x::y/n` into a Cidr, or returns an error text. */
export function parseCidr(text: string): Cidr | string {
  const m = /^([^/]+)\/(\d{1,3})$/.exec(text);
  if (!m) return `expected ADDRESS/PREFIX, got ${JSON.stringify(text)}`;
  const [, addr, p] = m;
  const family = isIPv4(addr) ? 4 : isIPv6(addr) ? 6 : 0;
  if (family === 0) return `${JSON.stringify(addr)} is not an IP address`;
  const why = refusal(addr);
  if (why) return why;
  const prefix = Number(p);
  if (prefix > (family === 4 ? 32 : 128)) return `prefix /${prefix} is out of range`;
  const address = canonical(addr);
  if (address === null) return `${JSON.stringify(addr)} is not an IP address`;
  return { family, address, prefix };
}

/** Text form `address/prefix` of a Cidr. */
export function cidrText(c: Cidr): string {
  return `${c.address}/${c.prefix}`;
}

class Reader {
  constructor(readonly where: string) {}
  fail(field: string, msg: string): never {
    throw new CniResultError(this.where, field, msg);
  }
  cidr(field: string, v: unknown): Cidr {
    if (typeof v !== "string") this.fail(field, `expected "ADDRESS/PREFIX", got ${String(v)}`);
    const c = parseCidr(v);
    if (typeof c === "string") this.fail(field, c);
    return c;
  }
  ip(field: string, v: unknown): string | undefined {
    if (v === undefined || v === "") return undefined;
    if (typeof v !== "string" || !(isIPv4(v) || isIPv6(v))) {
      this.fail(field, `expected an IP address, got ${JSON.stringify(v)}`);
    }
    const why = refusal(v);
    if (why) this.fail(field, why);
    return canonical(v) ?? this.fail(field, `expected an IP address, got ${JSON.stringify(v)}`);
  }
  strings(field: string, v: unknown): string[] {
    if (v === undefined || v === null) return [];
    if (!Array.isArray(v) || !v.every((s) => typeof s === "string")) {
      this.fail(field, "expected an array of strings");
    }
    return v;
  }
  routes(field: string, v: unknown): CniRoute[] {
    if (v === undefined || v === null) return [];
    if (!Array.isArray(v)) this.fail(field, "expected an array");
    return v.map((r, i) => {
      if (!isObject(r)) this.fail(`${field}[${i}]`, "expected an object");
      return {
        dst: this.cidr(`${field}[${i}].dst`, r.dst),
        gw: this.ip(`${field}[${i}].gw`, r.gw),
      };
    });
  }
  dns(v: unknown): DnsSpec {
    if (v === undefined || v === null) return { nameservers: [], search: [], options: [] };
    if (!isObject(v)) this.fail("dns", "expected an object");
    const nameservers = this.strings("dns.nameservers", v.nameservers);
    nameservers.forEach((n, i) => this.ip(`dns.nameservers[${i}]`, n));
    const search = this.strings("dns.search", v.search);
    if (typeof v.domain === "string" && v.domain && !search.includes(v.domain)) {
      search.unshift(v.domain);
    }
    return { nameservers, search, options: this.strings("dns.options", v.options) };
  }
}

function parseLegacy(r: Reader, doc: Record<string, unknown>, version: string): CniResult {
  const ips: CniIpConfig[] = [];
  const routes: CniRoute[] = [];
  for (const key of ["ip4", "ip6"]) {
    const block = doc[key];
    if (block === undefined || block === null) continue;
    if (!isObject(block)) r.fail(key, "expected an object");
    ips.push({
      address: r.cidr(`${key}.ip`, block.ip),
      gateway: r.ip(`${key}.gateway`, block.gateway),
    });
    routes.push(...r.routes(`${key}.routes`, block.routes));
  }
  return { cniVersion: version, interfaces: [], ips, routes, dns: r.dns(doc.dns), raw: doc };
}

/** Parses a plugin's ADD output; `where` names the plugin for error messages. */
export function parseCniResult(doc: unknown, where: string): CniResult {
  const r: Reader = new Reader(where);
  if (!isObject(doc)) r.fail("(result)", "expected a JSON object");
  const version = typeof doc.cniVersion === "string" ? doc.cniVersion : "0.2.0";
  if (version === "0.1.0" || version === "0.2.0") return parseLegacy(r, doc, version);
  const interfaces: CniInterface[] = [];
  if (doc.interfaces !== undefined && doc.interfaces !== null) {
    if (!Array.isArray(doc.interfaces)) r.fail("interfaces", "expected an array");
    doc.interfaces.forEach((it, i) => {
      const f = `interfaces[${i}]`;
      if (!isObject(it)) r.fail(f, "expected an object");
      if (typeof it.name !== "string" || it.name === "" || it.name.length > 15) {
        r.fail(`${f}.name`, `expected an interface name (1-15 characters)`);
      }
      const out: CniInterface = { name: it.name };
      if (it.mac !== undefined && it.mac !== "") {
        if (typeof it.mac !== "string" || !MAC_RE.test(it.mac)) {
          r.fail(`${f}.mac`, `expected a MAC address, got ${JSON.stringify(it.mac)}`);
        }
        out.mac = it.mac.toLowerCase();
      }
      if (typeof it.sandbox === "string" && it.sandbox !== "") out.sandbox = it.sandbox;
      if (it.mtu !== undefined) {
        if (!Number.isInteger(it.mtu) || (it.mtu as number) < 0 || (it.mtu as number) > 65535) {
          r.fail(`${f}.mtu`, "expected an integer 0-65535");
        }
        out.mtu = it.mtu as number;
      }
      interfaces.push(out);
    });
  }
  const ips: CniIpConfig[] = [];
  if (doc.ips !== undefined && doc.ips !== null) {
    if (!Array.isArray(doc.ips)) r.fail("ips", "expected an array");
    doc.ips.forEach((ipc, i) => {
      const f = `ips[${i}]`;
      if (!isObject(ipc)) r.fail(f, "expected an object");
      const address = r.cidr(`${f}.address`, ipc.address);
      if (ipc.version !== undefined && ipc.version !== String(address.family)) {
        r.fail(`${f}.version`, `says ${JSON.stringify(ipc.version)} for ${cidrText(address)}`);
      }
      const out: CniIpConfig = { address, gateway: r.ip(`${f}.gateway`, ipc.gateway) };
      if (ipc.interface !== undefined && ipc.interface !== null) {
        const n = ipc.interface;
        if (!Number.isInteger(n) || (n as number) < 0 || (n as number) >= interfaces.length) {
          r.fail(
            `${f}.interface`,
            `index ${JSON.stringify(n)} is outside interfaces[0..${interfaces.length - 1}]`,
          );
        }
        out.interface = n as number;
      }
      ips.push(out);
    });
  }
  return {
    cniVersion: version,
    interfaces,
    ips,
    routes: r.routes("routes", doc.routes),
    dns: r.dns(doc.dns),
    raw: doc,
  };
}

/** The sandbox-side addresses of a result (those on an interface with `sandbox` set, or all). */
export function podAddresses(result: CniResult): Cidr[] {
  return result.ips
    .filter((ip) => ip.interface === undefined || result.interfaces[ip.interface]?.sandbox)
    .map((ip) => ip.address);
}
