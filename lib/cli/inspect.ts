/**
 * `nerdbox inspect [--json] [--probe] ANNOTATION…|--spec CONFIG_JSON`: parses, validates and
 * explains `io.containerd.nerdbox.*` annotations, optionally probing the provider sockets.
 * Exit codes: 0 valid, 2 any invalid annotation, 3 valid but a probe failed, 1 anything else.
 * The report's shape and its text are lib/cli/inspect_report.ts.
 */
import { parseArgs } from "node:util";
import type { SpecError } from "../spec/types.ts";
import { SpecValidationError } from "../spec/types.ts";
import { ANNOTATION_PREFIX, networkKey, parseAnnotations } from "../spec/annotations.ts";
import { configAnnotations, OciReadError, readConfigJson } from "../spec/oci.ts";
import { formatCidr } from "../spec/cidr.ts";
import { formatPort } from "../spec/ports.ts";
import { formatResolvConf } from "../spec/dns.ts";
import { DEFAULT_CPUS, DEFAULT_MEMORY_MIB } from "../spec/resources.ts";
import {
  libkrunNetCall,
  libkrunNetFlags,
  libkrunNetFlagsText,
  libkrunNetFunction,
} from "../spec/libkrun_net.ts";
import { probeSocket } from "../net/probe.ts";
import { type InspectReport, type NetworkReport, renderText } from "./inspect_report.ts";

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
