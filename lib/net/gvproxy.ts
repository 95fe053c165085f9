/**
 * gvisor-tap-vsock via libgvproxy as a network provider: on Linux a UNIX stream socket speaking
 * the QEMU protocol (4-byte big-endian length per frame), served by a DHCP server, DNS, NAT.
 * One VM connection per instance. Runs in this process (Go runtime inside Deno).
 */
import { gvproxyCreate, gvproxyDestroy, gvproxyStats, gvproxyVersion } from "../../ffi/gvproxy.ts";

/** A TCP forward from `0.0.0.0:hostPort` (in gvproxy's netns) to the guest. */
export interface GvproxyPortMapping {
  hostPort: number;
  guestPort: number;
}

/** Typed gvproxy configuration (libgvproxy 0.2.11 JSON keys). */
export interface GvproxyConfig {
  socketPath: string;
  /** Default 192.168.127.0/24. */
  subnet?: string;
  gatewayIp?: string;
  gatewayMac?: string;
  guestIp?: string;
  /** The DHCP lease is keyed on it. */
  guestMac?: string;
  mtu?: number;
  portMappings?: GvproxyPortMapping[];
  debug?: boolean;
  captureFile?: string;
}

/** Defaults that match what gvproxy users (and libkrun's docs) expect. */
export const GVPROXY_DEFAULTS = {
  subnet: "192.168.127.0/24",
  gatewayIp: "192.168.127.1",
  gatewayMac: "5a:94:ef:e4:0c:dd",
  guestIp: "192.168.127.2",
  guestMac: "5a:94:ef:e4:0c:ee",
  mtu: 1500,
} as const;

/** The JSON libgvproxy's gvproxy_create takes. */
export function gvproxyJson(cfg: GvproxyConfig): string {
  if (!cfg.socketPath.startsWith("/")) {
    throw new Error(
      `gvproxy socketPath ${JSON.stringify(cfg.socketPath)}: expected an absolute path`,
    );
  }
  for (const m of cfg.portMappings ?? []) {
    for (const [k, v] of [["hostPort", m.hostPort], ["guestPort", m.guestPort]] as const) {
      if (!Number.isInteger(v) || v < 1 || v > 65535) {
        throw new Error(`gvproxy port mapping ${k}=${v}: expected an integer 1-65535`);
      }
    }
  }
  return JSON.stringify({
    socket_path: cfg.socketPath,
    subnet: cfg.subnet ?? GVPROXY_DEFAULTS.subnet,
    gateway_ip: cfg.gatewayIp ?? GVPROXY_DEFAULTS.gatewayIp,
    gateway_mac: cfg.gatewayMac ?? GVPROXY_DEFAULTS.gatewayMac,
    guest_ip: cfg.guestIp ?? GVPROXY_DEFAULTS.guestIp,
    guest_mac: (cfg.guestMac ?? GVPROXY_DEFAULTS.guestMac).toLowerCase(),
    mtu: cfg.mtu ?? GVPROXY_DEFAULTS.mtu,
    port_mappings: (cfg.portMappings ?? []).map((m) => ({
      host_port: m.hostPort,
      guest_port: m.guestPort,
    })),
    dns_zones: [],
    dns_search_domains: [],
    debug: cfg.debug ?? false,
    ...(cfg.captureFile ? { capture_file: cfg.captureFile } : {}),
  });
}

/** A running gvproxy instance. */
export interface GvproxyHandle {
  readonly id: number;
  readonly socket: string;
  readonly version: string;
  /** Traffic counters (parsed JSON), or undefined once destroyed. */
  stats(): Record<string, unknown> | undefined;
  /** Destroys the instance and removes its socket (idempotent). */
  stop(): Promise<void>;
}

/** Creates a gvproxy instance; its socket exists when this returns. */
export async function startGvproxy(cfg: GvproxyConfig): Promise<GvproxyHandle> {
  const json = gvproxyJson(cfg);
  await Deno.remove(cfg.socketPath).catch(() => {});
  const id = gvproxyCreate(json);
  if (id < 0) throw new Error(`gvproxy_create rejected the configuration ${json}`);
  let stopped = false;
  return {
    id,
    socket: cfg.socketPath,
    version: gvproxyVersion(),
    stats() {
      if (stopped) return undefined;
      const s = gvproxyStats(id);
      return s === undefined ? undefined : JSON.parse(s);
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      gvproxyDestroy(id);
      await Deno.remove(cfg.socketPath).catch(() => {});
    },
  };
}
