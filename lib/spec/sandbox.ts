/** The one place flags and annotations meet: everything about a sandbox, validated together. */
import type { NetworkSpec, PortSpec, ProcessSpec, SandboxSpec, SpecError } from "./types.ts";
import { SpecValidationError } from "./types.ts";
import {
  checkCtrNetworks,
  collectAnnotations,
  KEY_PUBLISH,
  MAX_ANNOTATION_VALUE_BYTES,
  MAX_NETWORKS,
  networkKey,
  utf8Length,
} from "./annotations.ts";
import { parseNetworkValue } from "./network.ts";
import { checkUniqueNetworks } from "./collisions.ts";
import { DEFAULT_CPUS, DEFAULT_MEMORY_MIB, parseCpus, parseMemoryMiB } from "./resources.ts";
import { parseBackend } from "./backend.ts";
import { parsePort } from "./ports.ts";
import { checkHostname } from "./hostname.ts";
import { FieldError } from "./field_error.ts";

/** What a caller (nerdbox run, the shim) knows about a sandbox, flags as given. */
export interface SandboxInput {
  id: string;
  rootfs: string;
  process: ProcessSpec;
  hostname?: string;
  annotations?: Record<string, string>;
  /** `--net` values, same grammar as network.N; the i-th is network i and replaces it. */
  netFlags?: string[];
  /** `--publish` values. */
  publish?: string[];
  cpus?: string;
  memory?: string;
  backend?: string;
  netns?: string;
}

/** The name a `--net` flag goes by in messages. */
export function netFlagName(i: number): string {
  return `--net #${i}`;
}

const ID_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

/**
 * Largest process description (args, env and cwd as JSON, UTF-8) accepted: it travels to the guest
 * inside the one CONFIG frame, whose payload is at most 1 MiB (lib/guest_protocol.ts).
 */
export const MAX_PROCESS_JSON_BYTES = 512 * 1024;
/** Most args or env entries accepted. */
export const MAX_PROCESS_ENTRIES = 4096;

/**
 * Builds the SandboxSpec: annotations first, flags override them (`--net` i replaces network.i;
 * --cpus/--memory/--backend replace the annotations). Throws SpecValidationError with every error.
 */
export function buildSandboxSpec(input: SandboxInput): { spec: SandboxSpec; warnings: string[] } {
  const errors: SpecError[] = [];
  const bad = (annotation: string, value: string, message: string) =>
    errors.push({ annotation, field: "", value, message });
  const collected = collectAnnotations(input.annotations ?? {});
  const warnings = [...collected.warnings];
  errors.push(...collected.errors);

  if (!ID_RE.test(input.id)) {
    bad(
      "id",
      input.id,
      `${JSON.stringify(input.id)}: expected 1-128 letters, digits, '_', '.' or '-', ` +
        `starting with a letter or digit`,
    );
  }
  if (!input.rootfs.startsWith("/")) {
    bad("rootfs", input.rootfs, `${JSON.stringify(input.rootfs)}: expected an absolute path`);
  }
  if (input.process.args.length === 0) {
    bad("process.args", "", "expected at least one argument (the program to run)");
  }
  for (const k of ["args", "env"] as const) {
    const n = input.process[k].length;
    if (n > MAX_PROCESS_ENTRIES) {
      bad(`process.${k}`, `${n} entries`, `expected at most ${MAX_PROCESS_ENTRIES} entries`);
    }
    const i = input.process[k].findIndex((a) => a.includes("\0"));
    if (i >= 0) {
      const v = input.process[k][i];
      bad(`process.${k}[${i}]`, v.length > 80 ? `${v.slice(0, 80)}…` : v, "expected no NUL bytes");
    }
  }
  const processBytes = utf8Length(JSON.stringify({
    args: input.process.args,
    env: input.process.env,
    cwd: input.process.cwd,
  }));
  if (processBytes > MAX_PROCESS_JSON_BYTES) {
    bad(
      "process",
      `${processBytes} bytes`,
      `args, env and cwd take ${processBytes} bytes as JSON: expected at most ` +
        `${MAX_PROCESS_JSON_BYTES} (they travel to the guest in one 1 MiB control frame)`,
    );
  }
  if (input.netns !== undefined && !input.netns.startsWith("/")) {
    bad("--netns", input.netns, `${JSON.stringify(input.netns)}: expected an absolute path`);
  }
  let hostname = input.hostname || input.id.slice(0, 12).replace(/[^A-Za-z0-9-]/g, "-")
    .replace(/^-+|-+$/g, "");
  if (hostname === "") hostname = "nerdbox";
  try {
    checkHostname(hostname);
  } catch (e) {
    if (!(e instanceof FieldError)) throw e;
    bad("hostname", hostname, `${JSON.stringify(hostname)}: ${e.message}`);
  }

  // Networks: annotation network.N, replaced by --net #N.
  const names = new Map<number, string>();
  const byIndex = new Map<number, NetworkSpec>();
  for (const n of collected.networks) {
    byIndex.set(n.index, n);
    names.set(n.index, networkKey(n.index));
  }
  let allValid = collected.networksGiven === collected.networks.length;
  const netFlags = input.netFlags ?? [];
  if (netFlags.length > MAX_NETWORKS) {
    bad("--net", `${netFlags.length} flags`, `expected at most ${MAX_NETWORKS} --net flags`);
    throw new SpecValidationError(errors);
  }
  netFlags.forEach((value, i) => {
    const bytes = utf8Length(value);
    if (bytes > MAX_ANNOTATION_VALUE_BYTES) {
      bad(
        netFlagName(i),
        `${value.slice(0, 64)}… (${bytes} bytes)`,
        `value of ${bytes} bytes: expected at most ${MAX_ANNOTATION_VALUE_BYTES} (64 KiB)`,
      );
      allValid = false;
      return;
    }
    const r = parseNetworkValue(value, netFlagName(i), i);
    warnings.push(...r.warnings);
    errors.push(...r.errors);
    if (names.has(i) || (input.annotations ?? {})[networkKey(i)] !== undefined) {
      warnings.push(`${netFlagName(i)} replaces ${networkKey(i)}`);
    }
    names.set(i, netFlagName(i));
    if (r.network) byIndex.set(i, r.network);
    else {
      byIndex.delete(i);
      allValid = false;
    }
  });
  const networks = [...byIndex.values()].sort((a, b) => a.index - b.index);
  if (networks.length > MAX_NETWORKS) {
    bad(
      "networks",
      `${networks.length} networks`,
      `network.N annotations and --net flags together give ${networks.length} networks: ` +
        `expected at most ${MAX_NETWORKS}`,
    );
  }
  errors.push(...checkUniqueNetworks(networks, (i) => names.get(i) ?? networkKey(i)));
  errors.push(...checkCtrNetworks(collected.ctrNetworks, networks, allValid));

  // Resources and backend: flags win.
  const attempt = <T>(fn: () => T): T | undefined => {
    try {
      return fn();
    } catch (e) {
      if (!(e instanceof SpecValidationError)) throw e;
      errors.push(...e.errors);
      return undefined;
    }
  };
  const cpus = input.cpus !== undefined
    ? attempt(() => parseCpus(input.cpus!, "--cpus"))
    : collected.resources.cpus;
  const memoryMiB = input.memory !== undefined
    ? attempt(() => parseMemoryMiB(input.memory!, "--memory"))
    : collected.resources.memoryMiB;
  const backend = input.backend !== undefined
    ? attempt(() => parseBackend(input.backend!, "--backend"))
    : collected.backend;

  // Ports.
  // Ports: the publish annotation's list, then --publish flags; none unless asked for.
  const ports: PortSpec[] = [...(collected.publish?.ports ?? [])];
  const publishAll = collected.publish?.all === true;
  if (publishAll && (input.publish ?? []).length > 0) {
    bad(
      "--publish",
      (input.publish ?? []).join(","),
      `${KEY_PUBLISH}=all already publishes every guest port 1:1: drop --publish, or replace ` +
        `the annotation's "all" by the ports you want`,
    );
  }
  for (const p of input.publish ?? []) {
    const port = attempt(() => parsePort(p, "--publish"));
    if (!port) continue;
    const clash = ports.find((q) =>
      q.hostPort === port.hostPort && q.protocol === port.protocol &&
      (q.hostIp === undefined || port.hostIp === undefined || q.hostIp === port.hostIp)
    );
    if (clash) {
      bad(
        "--publish",
        p,
        `${JSON.stringify(p)}: host port ${port.hostPort}/${port.protocol} is already published: ` +
          `expected each host port once`,
      );
      continue;
    }
    ports.push(port);
  }

  if (errors.length > 0) throw new SpecValidationError(errors);
  const spec: SandboxSpec = {
    id: input.id,
    rootfs: input.rootfs,
    process: input.process,
    hostname,
    resources: { cpus: cpus ?? DEFAULT_CPUS, memoryMiB: memoryMiB ?? DEFAULT_MEMORY_MIB },
    networks,
    ctrNetworks: collected.ctrNetworks,
    ports,
    ...(collected.publish !== undefined || ports.length > 0 ? { publishAll } : {}),
    ...(collected.dns ? { dns: collected.dns } : {}),
    ...(input.netns !== undefined ? { netns: input.netns } : {}),
    backend: backend ?? "auto",
  };
  return { spec, warnings };
}
