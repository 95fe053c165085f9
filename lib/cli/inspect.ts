/**
 * `nerdbox inspect [--json] [--probe] ANNOTATION…|--spec CONFIG_JSON`: parses, validates and
 * explains `io.containerd.nerdbox.*` annotations, optionally probing the provider sockets.
 * Exit codes: 0 valid, 2 any invalid annotation, 3 valid but a probe failed, 1 anything else.
 */
import { parseArgs } from "node:util";
import type { SpecError } from "../spec/types.ts";
import { formatSpecError, SpecValidationError } from "../spec/types.ts";
import { ANNOTATION_PREFIX, networkKey, parseAnnotations } from "../spec/annotations.ts";
import { configAnnotations, OciReadError, readConfigJson } from "../spec/oci.ts";
import { formatCidr } from "../spec/cidr.ts";
import { formatPort } from "../spec/ports.ts";
import { formatFeatures } from "../spec/features.ts";
import { formatResolvConf } from "../spec/dns.ts";
import { DEFAULT_CPUS, DEFAULT_MEMORY_MIB } from "../spec/resources.ts";
import {
  libkrunNetCall,
  libkrunNetFlags,
  libkrunNetFlagsText,
  libkrunNetFunction,
} from "../spec/libkrun_net.ts";
import { type ProbeResult, probeSocket } from "../net/probe.ts";

/** Exit code: every annotation valid (and every probe passed). */
export const EXIT_OK = 0;
/** Exit code: anything but invalid input (unreadable --spec file, bad flags). */
export const EXIT_FAILURE = 1;
/** Exit code: at least one annotation is invalid. */
export const EXIT_INVALID = 2;
/** Exit code: annotations valid, but a probed socket is missing, dead or of the wrong type. */
export const EXIT_PROBE_FAILED = 3;

const USAGE = `Usage: nerdbox inspect [--json] [--probe] ANNOTATION...
       nerdbox inspect [--json] [--probe] --spec CONFIG_JSON
       nerdbox inspect [--json] --sandbox ID [--root DIR]   (a runtime-CLI sandbox's state)

Parses, validates and explains io.containerd.nerdbox.* annotations.

An ANNOTATION is KEY=VALUE with a full key (io.containerd.nerdbox.network.0=socket=...), or a
network value alone (socket=/run/gv.sock,mode=unixgram,mac=...): the i-th bare value is
io.containerd.nerdbox.network.i. --spec reads an OCI config.json (or a bundle directory holding
one) and inspects every io.containerd.nerdbox.* annotation in it.

Options:
  --json          print one JSON object instead of the explanation
  --probe         check each network's socket: exists, is a socket, bound/listening, of the
                  type mode says (without using up a single-client provider's connection)
  --spec PATH     inspect the annotations of this config.json or bundle directory
  -h, --help      show this help

Exit status: 0 valid; 2 an annotation is invalid (every error is reported); 3 valid, but a probe
failed; 1 other failures (unreadable --spec file, bad options).

See docs/annotations.md for the grammar.`;

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

/** Turns ANNOTATION arguments into an annotation map; bare values become network.<i>. */
export function annotationsFromArgs(args: string[]): {
  annotations: Record<string, string>;
  errors: SpecError[];
} {
  const annotations: Record<string, string> = {};
  const errors: SpecError[] = [];
  let bare = 0;
  for (const arg of args) {
    let key: string;
    let value: string;
    if (arg.startsWith(ANNOTATION_PREFIX)) {
      const eq = arg.indexOf("=");
      if (eq < 0) {
        errors.push({
          annotation: arg,
          field: "",
          value: "",
          message: "no value: expected KEY=VALUE, e.g. io.containerd.nerdbox.network.0=socket=...",
        });
        continue;
      }
      key = arg.slice(0, eq);
      value = arg.slice(eq + 1);
    } else {
      key = networkKey(bare++);
      value = arg;
    }
    if (Object.hasOwn(annotations, key)) {
      errors.push({
        annotation: key,
        field: "",
        value,
        message: "given twice (a bare value is network.<its position among bare values>): " +
          "expected each annotation once",
      });
      continue;
    }
    annotations[key] = value;
  }
  return { annotations, errors };
}

/** Parses, cross-checks and (optionally) probes `annotations` into a report. */
export async function inspectAnnotations(
  annotations: Record<string, string>,
  opts: { source: string; probe: boolean; extraErrors?: SpecError[] },
): Promise<InspectReport> {
  const parsed = parseAnnotations(annotations);
  const errors = [...(opts.extraErrors ?? []), ...parsed.errors];
  const networks: NetworkReport[] = parsed.networks.map((n, i) => ({
    index: n.index,
    annotation: networkKey(n.index),
    socket: n.socket,
    mode: n.mode,
    mac: n.mac,
    dhcp: n.dhcp,
    addrs: n.addrs.map(formatCidr),
    features: n.features,
    featureNames: n.featureNames,
    vfkit: n.vfkit,
    vnetHdr: n.vnetHdr,
    defaultGateway: i === 0,
    guestInterface: `eth${i}`,
    libkrun: {
      function: libkrunNetFunction(n),
      features: n.features,
      flags: libkrunNetFlags(n),
      flagNames: libkrunNetFlagsText(n),
      call: libkrunNetCall(n),
    },
  }));
  let probeFailed = false;
  if (opts.probe) {
    for (const n of networks) {
      n.probe = await probeSocket(n.socket, n.mode as "unixgram" | "unixstream");
      if (!n.probe.ok) probeFailed = true;
    }
  }
  const r = parsed.resources;
  return {
    valid: errors.length === 0,
    source: opts.source,
    networks,
    tsi: networks.length === 0 &&
      !Object.keys(annotations).some((k) => k.startsWith(`${ANNOTATION_PREFIX}network.`)),
    ctrNetworks: parsed.ctrNetworks.map((c) => {
      const vm = parsed.networks.find((n) => n.mac === c.vmmac);
      return {
        index: c.index,
        annotation: `${ANNOTATION_PREFIX}ctr.network.${c.index}`,
        vmmac: c.vmmac,
        ...(vm ? { vmNetwork: vm.index } : {}),
        ...(c.mac !== undefined ? { mac: c.mac } : {}),
        addrs: c.addrs.map(formatCidr),
        ...(c.ifname !== undefined ? { ifname: c.ifname } : {}),
        gateways: c.gateways,
      };
    }),
    dns: parsed.dns ? { ...parsed.dns, resolvConf: formatResolvConf(parsed.dns) } : null,
    resources: {
      cpus: r.cpus ?? DEFAULT_CPUS,
      memoryMiB: r.memoryMiB ?? DEFAULT_MEMORY_MIB,
      source: {
        cpus: r.cpus === undefined ? "default" : "annotation",
        memoryMiB: r.memoryMiB === undefined ? "default" : "annotation",
      },
    },
    backend: parsed.backend ?? "auto",
    backendSource: parsed.backend === undefined ? "default" : "annotation",
    publish: {
      mode: parsed.publish?.all ? "all" : (parsed.publish?.ports.length ?? 0) > 0 ? "list" : "none",
      ports: (parsed.publish?.ports ?? []).map(formatPort),
      source: parsed.publish === undefined ? "default" : "annotation",
    },
    warnings: parsed.warnings,
    errors,
    probeFailed,
  };
}

/** The exit code for a report. */
export function exitCodeOf(report: InspectReport): number {
  if (!report.valid) return EXIT_INVALID;
  return report.probeFailed ? EXIT_PROBE_FAILED : EXIT_OK;
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

/** `nerdbox inspect` entry point; returns the exit code. */
export async function main(args: string[]): Promise<number> {
  if (args.some((a) => a === "--sandbox" || a.startsWith("--sandbox="))) {
    return await (await import("./inspect_sandbox.ts")).main(args);
  }
  let values: { json?: boolean; probe?: boolean; spec?: string; help?: boolean };
  let positionals: string[];
  try {
    ({ values, positionals } = parseArgs({
      args,
      options: {
        json: { type: "boolean" },
        probe: { type: "boolean" },
        spec: { type: "string" },
        help: { type: "boolean", short: "h" },
      },
      allowPositionals: true,
      strict: true,
    }));
  } catch (e) {
    console.error(`nerdbox inspect: ${(e as Error).message}\n\n${USAGE}`);
    return EXIT_FAILURE;
  }
  if (values.help) {
    console.log(USAGE);
    return EXIT_OK;
  }
  if (values.spec !== undefined && positionals.length > 0) {
    console.error("nerdbox inspect: give either ANNOTATION arguments or --spec, not both");
    return EXIT_FAILURE;
  }
  if (values.spec === undefined && positionals.length === 0) {
    console.error(`nerdbox inspect: nothing to inspect\n\n${USAGE}`);
    return EXIT_FAILURE;
  }

  let annotations: Record<string, string>;
  let extraErrors: SpecError[];
  let source: string;
  if (values.spec !== undefined) {
    let path = values.spec;
    try {
      if ((await Deno.stat(path)).isDirectory) path = `${path.replace(/\/+$/, "")}/config.json`;
      ({ annotations, errors: extraErrors } = configAnnotations(await readConfigJson(path)));
    } catch (e) {
      if (
        e instanceof OciReadError || e instanceof Deno.errors.NotFound ||
        e instanceof SpecValidationError
      ) {
        console.error(`nerdbox inspect: --spec: ${e.message}`);
        return EXIT_FAILURE;
      }
      throw e;
    }
    source = path;
  } else {
    ({ annotations, errors: extraErrors } = annotationsFromArgs(positionals));
    source = "command-line arguments";
  }

  const report = await inspectAnnotations(annotations, {
    source,
    probe: values.probe === true,
    extraErrors,
  });
  console.log(values.json ? JSON.stringify(report, null, 2) : renderText(report));
  if (!report.valid) {
    const n = report.errors.length;
    console.error(`nerdbox inspect: ${n} invalid annotation error${n === 1 ? "" : "s"}`);
  } else if (report.probeFailed) {
    console.error("nerdbox inspect: a probe failed");
  }
  return exitCodeOf(report);
}
