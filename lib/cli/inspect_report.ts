/**
 * The report `nerdbox inspect` builds (lib/cli/inspect.ts): its shape, which is what `--json`
 * prints, and its readable text rendering.
 */
import type { SpecError } from "../spec/types.ts";
import { formatSpecError } from "../spec/types.ts";
import { networkKey } from "../spec/annotations.ts";
import { formatFeatures } from "../spec/features.ts";
import type { ProbeResult } from "../net/probe.ts";

/** The network part of the report. */
export interface NetworkReport {
  index: number;
  annotation: string;
  socket: string;
  mode: string;
  mac: string;
  dhcp: boolean;
  /** CIDR strings. */
  addrs: string[];
  features: number;
  featureNames: string[];
  vfkit: boolean;
  vnetHdr: boolean;
  defaultGateway: boolean;
  /** The guest interface libkrun creates for it (eth0, eth1… in order). */
  guestInterface: string;
  libkrun: { function: string; features: number; flags: number; flagNames: string; call: string };
  probe?: ProbeResult;
}

/** Everything `inspect` found, as printed by --json. */
export interface InspectReport {
  valid: boolean;
  source: string;
  networks: NetworkReport[];
  /** True when there are no VM networks: the VM uses libkrun's TSI. */
  tsi: boolean;
  ctrNetworks: {
    index: number;
    annotation: string;
    vmmac: string;
    /** Index of the VM network vmmac names, when it matches one. */
    vmNetwork?: number;
    mac?: string;
    addrs: string[];
    ifname?: string;
    gateways: string[];
  }[];
  dns: {
    nameservers: string[];
    search: string[];
    options: string[];
    domain?: string;
    resolvConf: string;
  } | null;
  resources: { cpus: number; memoryMiB: number; source: { cpus: string; memoryMiB: string } };
  backend: string;
  backendSource: string;
  /** Ports the default network (TSI / private passt) publishes: `none`, `all` or the list. */
  publish: { mode: "none" | "all" | "list"; ports: string[]; source: string };
  warnings: string[];
  errors: SpecError[];
  probeFailed: boolean;
}

const MODE_TEXT: Record<string, string> = {
  unixgram: "unixgram (SOCK_DGRAM: one Ethernet frame per datagram)",
  unixstream: "unixstream (SOCK_STREAM: 4-byte big-endian length, then the frame)",
};

/** The readable explanation of a report (errors included). */
export function renderText(rep: InspectReport): string {
  const out: string[] = [];
  const row = (k: string, v: string) => out.push(`  ${k.padEnd(10)} ${v}`);
  out.push(`Source: ${rep.source}`, "");
  if (rep.networks.length === 0) {
    out.push(
      rep.tsi
        ? "Networks: none: the VM gets no NIC and uses TSI (libkrun's transparent socket " +
          "impersonation: TCP and UDP, no ICMP)."
        : "Networks: none valid (see the errors below).",
      "",
    );
  }
  for (const n of rep.networks) {
    out.push(
      `${n.annotation} -> guest ${n.guestInterface}${n.defaultGateway ? " (default gateway)" : ""}`,
    );
    row("socket", n.socket);
    row("mode", MODE_TEXT[n.mode] ?? n.mode);
    row("mac", n.mac);
    const addressing = n.dhcp ? ["DHCPv4"] : [];
    for (const a of n.addrs) {
      const inferred = rep.warnings.some((w) =>
        w.startsWith(`${n.annotation}: addr=`) && w.endsWith(`assuming ${a}`)
      );
      addressing.push(`${a} (static${inferred ? ", prefix inferred from a bare address" : ""})`);
    }
    row(
      "addressing",
      addressing.length > 0 ? addressing.join(", ") : "none (configure it yourself)",
    );
    row(
      "features",
      n.features === 0 ? "0 (none)" : `${n.features} = ${formatFeatures(n.features)}`,
    );
    row("vfkit", n.vfkit ? "true (send VFKT after connecting)" : "false");
    row("vnet_hdr", String(n.vnetHdr));
    row("libkrun", n.libkrun.call);
    if (n.probe) {
      row("probe", `${n.probe.ok ? "ok" : `FAILED (${n.probe.status})`}: ${n.probe.message}`);
    }
    out.push("");
  }
  for (const c of rep.ctrNetworks) {
    const vm = c.vmNetwork === undefined ? "no VM network" : networkKey(c.vmNetwork);
    const nic = rep.networks.find((n) => n.mac === c.vmmac)?.guestInterface ?? "its NIC";
    out.push(`${c.annotation} -> container interface on ${vm} (vmmac ${c.vmmac})`);
    row("guest", `is ${nic} itself, set up as below while down (docs/annotations.md)`);
    row(
      "ifname",
      c.ifname === undefined
        ? `(keeps ${nic})`
        : c.ifname.includes("%d")
        ? `${c.ifname} (the kernel fills in %d)`
        : c.ifname,
    );
    row("mac", c.mac ?? `(keeps ${c.vmmac})`);
    row("addr", c.addrs.length > 0 ? `${c.addrs.join(", ")} (added to the NIC's own)` : "none");
    const v4 = c.gateways.some((g) => !g.includes(":"));
    row(
      "gw",
      c.gateways.length > 0
        ? `${c.gateways.join(", ")} (default route${v4 ? "; replaces the first network's" : ""})`
        : "none",
    );
    out.push("");
  }
  if (rep.dns) {
    out.push("DNS (ctr.dns) -> /etc/resolv.conf:");
    for (const l of rep.dns.resolvConf.trimEnd().split("\n")) out.push(`  ${l}`);
    out.push("");
  }
  const r = rep.resources;
  out.push(
    `Resources: ${r.cpus} vCPU${r.cpus === 1 ? "" : "s"} (${r.source.cpus}), ` +
      `${r.memoryMiB} MiB (${r.source.memoryMiB})`,
  );
  out.push(`Backend: ${rep.backend} (${rep.backendSource})`);
  const pub = rep.publish;
  out.push(
    `Published ports: ${
      pub.mode === "all"
        ? "every port the guest listens on, 1:1 (libkrun TSI)"
        : pub.mode === "list"
        ? pub.ports.join(", ")
        : "none (publish nothing unless asked)"
    } (${pub.source})`,
  );
  if (rep.warnings.length > 0) {
    out.push("", "Warnings:");
    for (const w of rep.warnings) out.push(`  - ${w}`);
  }
  if (rep.errors.length > 0) {
    out.push("", `Errors (${rep.errors.length}):`);
    for (const e of rep.errors) out.push(`  - ${formatSpecError(e)}`);
  }
  out.push("", verdict(rep));
  return out.join("\n");
}

function verdict(rep: InspectReport): string {
  if (!rep.valid) return `INVALID: ${rep.errors.length} error${rep.errors.length === 1 ? "" : "s"}`;
  if (rep.probeFailed) return "VALID, but a probe failed";
  return "VALID";
}
