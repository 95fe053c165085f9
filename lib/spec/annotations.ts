/** Every `io.containerd.nerdbox.*` annotation, parsed and cross-checked in one pass. */
import type {
  BackendChoice,
  CtrNetworkSpec,
  DnsSpec,
  NetworkSpec,
  ResourceSpec,
  SpecError,
} from "./types.ts";
import { SpecValidationError } from "./types.ts";
import { parseNetworkValue } from "./network.ts";
import { parseCtrNetworkValue } from "./ctr_network.ts";
import { parseDnsValue } from "./dns.ts";
import { parseCpus, parseMemoryMiB } from "./resources.ts";
import { parseBackend } from "./backend.ts";
import { nearest } from "./suggest.ts";
import { checkUniqueNetworks, claimUnique } from "./collisions.ts";
import { checkCtrPlacement } from "./ctr_placement.ts";
import { parsePublishValue, type PublishSpec } from "./publish.ts";

export { parseNetworkValue } from "./network.ts";
export type { ParsedNetwork } from "./network.ts";

/** The prefix every nerdbox annotation key starts with. */
export const ANNOTATION_PREFIX = "io.containerd.nerdbox.";

/** Most `network.N` (and, separately, `ctr.network.N`) annotations accepted. */
export const MAX_NETWORKS = 64;
/** Most `io.containerd.nerdbox.*` annotations accepted at all. */
export const MAX_NERDBOX_ANNOTATIONS = 256;
/** Largest nerdbox annotation value accepted (64 KiB of UTF-8). */
export const MAX_ANNOTATION_VALUE_BYTES = 64 * 1024;
/** Longest nerdbox annotation key accepted (bytes). */
export const MAX_ANNOTATION_KEY_BYTES = 256;

/** Annotation keys without an index. */
export const KEY_CPU = `${ANNOTATION_PREFIX}resources.cpu`;
/** Memory annotation key. */
export const KEY_MEMORY = `${ANNOTATION_PREFIX}resources.memory`;
/** DNS annotation key. */
export const KEY_DNS = `${ANNOTATION_PREFIX}ctr.dns`;
/** Backend annotation key. */
export const KEY_BACKEND = `${ANNOTATION_PREFIX}backend`;
/** Published-ports annotation key (`none`, `all` or a list; docs/annotations.md). */
export const KEY_PUBLISH = `${ANNOTATION_PREFIX}publish`;

/** Everything the nerdbox annotations say, plus every warning and error. */
export interface ParsedAnnotations {
  /** Valid VM networks, ordered by N. */
  networks: NetworkSpec[];
  /** Valid container interfaces, ordered by N. */
  ctrNetworks: CtrNetworkSpec[];
  resources: Partial<ResourceSpec>;
  dns?: DnsSpec;
  backend?: BackendChoice;
  /** The publish annotation, when given. */
  publish?: PublishSpec;
  warnings: string[];
  errors: SpecError[];
}

/** The key of network N. */
export function networkKey(n: number): string {
  return `${ANNOTATION_PREFIX}network.${n}`;
}

/** The key of ctr network N. */
export function ctrNetworkKey(n: number): string {
  return `${ANNOTATION_PREFIX}ctr.network.${n}`;
}

const INDEX_RE = /^(0|[1-9][0-9]*)$/;

/** Parses the N of `network.N`: a non-negative decimal integer without leading zeros. */
export function parseIndex(text: string): number | undefined {
  if (!INDEX_RE.test(text)) return undefined;
  const n = Number(text);
  return Number.isSafeInteger(n) ? n : undefined;
}

function unknownKeyMessage(key: string): string {
  const rest = key.slice(ANNOTATION_PREFIX.length);
  const n = /\.([0-9]+)$/.exec(rest)?.[1] ?? "0";
  const candidates = [
    `network.${n}`,
    `ctr.network.${n}`,
    "ctr.dns",
    "resources.cpu",
    "resources.memory",
    "backend",
    "publish",
  ];
  const best = nearest(rest, candidates);
  return "unknown nerdbox annotation: expected io.containerd.nerdbox.network.N, " +
    "ctr.network.N, ctr.dns, resources.cpu, resources.memory, backend or publish" +
    (best ? `; did you mean "${ANNOTATION_PREFIX}${best}"?` : "");
}

/**
 * Parses every `io.containerd.nerdbox.*` annotation (others are ignored). Never throws on user
 * input: every problem is in `errors`, every doubt in `warnings`.
 */
export function parseAnnotations(annotations: Record<string, string>): ParsedAnnotations {
  const { networksGiven, ...out } = collectAnnotations(annotations);
  out.errors.push(...checkUniqueNetworks(out.networks, networkKey));
  out.errors.push(
    ...checkCtrNetworks(out.ctrNetworks, out.networks, networksGiven === out.networks.length),
  );
  return out;
}

/** parseAnnotations without the checks across networks, and how many network.N were given. */
export interface CollectedAnnotations extends ParsedAnnotations {
  /** network.N annotations given (valid or not). */
  networksGiven: number;
}

/**
 * Parses each annotation on its own, without the checks across networks (for callers that merge
 * in more networks first, like buildSandboxSpec).
 */
export function collectAnnotations(annotations: Record<string, string>): CollectedAnnotations {
  const out: CollectedAnnotations = {
    networks: [],
    ctrNetworks: [],
    resources: {},
    warnings: [],
    errors: [],
    networksGiven: 0,
  };
  const nets: { n: number; value: string }[] = [];
  const ctrs: { n: number; value: string }[] = [];
  const badIndex = (key: string, value: string, what: string, text: string) =>
    out.errors.push({
      annotation: key,
      field: "",
      value,
      message: `${what} index ${JSON.stringify(text)} in the key: expected a non-negative ` +
        `decimal integer without leading zeros, e.g. ${what}.0`,
    });

  const keys = Object.keys(annotations).filter((k) => k.startsWith(ANNOTATION_PREFIX));
  // Bounds first, before any value is parsed: counts, then sizes.
  if (keys.length > MAX_NERDBOX_ANNOTATIONS) {
    out.errors.push({
      annotation: ANNOTATION_PREFIX + "*",
      field: "",
      value: `${keys.length} annotations`,
      message: `${keys.length} nerdbox annotations: expected at most ${MAX_NERDBOX_ANNOTATIONS}`,
    });
    return out;
  }
  for (const [what, prefix] of [["network", "network."], ["ctr.network", "ctr.network."]]) {
    const given = keys.filter((k) => k.startsWith(ANNOTATION_PREFIX + prefix)).length;
    if (given > MAX_NETWORKS) {
      out.errors.push({
        annotation: `${ANNOTATION_PREFIX}${what}.N`,
        field: "",
        value: `${given} annotations`,
        message: `${given} ${what}.N annotations: expected at most ${MAX_NETWORKS}`,
      });
    }
  }
  if (out.errors.length > 0) return out;
  const oversized = (key: string, value: string): boolean => {
    const keyBytes = utf8Length(key);
    const valueBytes = utf8Length(value);
    if (keyBytes > MAX_ANNOTATION_KEY_BYTES) {
      out.errors.push({
        annotation: `${key.slice(0, 64)}…`,
        field: "",
        value: `${keyBytes} bytes`,
        message:
          `annotation key of ${keyBytes} bytes: expected at most ${MAX_ANNOTATION_KEY_BYTES}`,
      });
      return true;
    }
    if (valueBytes > MAX_ANNOTATION_VALUE_BYTES) {
      out.errors.push({
        annotation: key,
        field: "",
        value: `${value.slice(0, 64)}… (${valueBytes} bytes)`,
        message:
          `value of ${valueBytes} bytes: expected at most ${MAX_ANNOTATION_VALUE_BYTES} (64 KiB)`,
      });
      return true;
    }
    return false;
  };

  for (const key of keys.sort()) {
    const value = annotations[key];
    if (typeof value !== "string") {
      out.errors.push({
        annotation: key,
        field: "",
        value: String(value),
        message: "expected a string value",
      });
      continue;
    }
    if (oversized(key, value)) continue;
    const rest = key.slice(ANNOTATION_PREFIX.length);
    try {
      if (rest.startsWith("network.")) {
        const text = rest.slice("network.".length);
        const n = parseIndex(text);
        if (n === undefined) badIndex(key, value, "network", text);
        else nets.push({ n, value });
      } else if (rest.startsWith("ctr.network.")) {
        const text = rest.slice("ctr.network.".length);
        const n = parseIndex(text);
        if (n === undefined) badIndex(key, value, "ctr.network", text);
        else ctrs.push({ n, value });
      } else if (key === KEY_CPU) {
        out.resources.cpus = parseCpus(value, key);
      } else if (key === KEY_MEMORY) {
        out.resources.memoryMiB = parseMemoryMiB(value, key);
      } else if (key === KEY_BACKEND) {
        out.backend = parseBackend(value, key);
      } else if (key === KEY_PUBLISH) {
        out.publish = parsePublishValue(value, key);
      } else if (key === KEY_DNS) {
        const d = parseDnsValue(value, key);
        out.warnings.push(...d.warnings);
        out.errors.push(...d.errors);
        if (d.dns) out.dns = d.dns;
      } else {
        out.errors.push({ annotation: key, field: "", value, message: unknownKeyMessage(key) });
      }
    } catch (e) {
      if (!(e instanceof SpecValidationError)) throw e;
      out.errors.push(...e.errors);
    }
  }

  out.networksGiven = nets.length;
  nets.sort((a, b) => a.n - b.n);
  for (const { n, value } of nets) {
    const r = parseNetworkValue(value, networkKey(n), n);
    out.warnings.push(...r.warnings);
    out.errors.push(...r.errors);
    if (r.network) out.networks.push(r.network);
  }
  ctrs.sort((a, b) => a.n - b.n);
  for (const { n, value } of ctrs) {
    const r = parseCtrNetworkValue(value, ctrNetworkKey(n), n);
    out.warnings.push(...r.warnings);
    out.errors.push(...r.errors);
    if (r.ctrNetwork) out.ctrNetworks.push(r.ctrNetwork);
  }
  return out;
}

/**
 * Cross-checks ctr networks against the VM networks: each vmmac must be a VM network's MAC, no
 * two ctr networks may share a MAC or an interface name, and each must fit its NIC
 * (checkCtrPlacement). When some VM network was invalid, an unmatched vmmac is not reported (its
 * network may be the invalid one).
 */
export function checkCtrNetworks(
  ctrs: CtrNetworkSpec[],
  networks: NetworkSpec[],
  allNetworksValid = true,
): SpecError[] {
  const errors: SpecError[] = [];
  const vmMacs = networks.map((n) => n.mac);
  const macs = {
    seen: new Map(),
    field: "mac",
    nameOf: ctrNetworkKey,
    expected: "a MAC of its own",
  };
  const names = {
    seen: new Map(),
    field: "ifname",
    nameOf: ctrNetworkKey,
    expected: "a name of its own",
  };
  for (const c of ctrs) {
    const key = ctrNetworkKey(c.index);
    if (!vmMacs.includes(c.vmmac) && allNetworksValid) {
      errors.push({
        annotation: key,
        field: "vmmac",
        value: c.vmmac,
        message: `matches no VM network: expected the mac of an ${ANNOTATION_PREFIX}network.N (${
          vmMacs.length > 0 ? vmMacs.join(", ") : "there are none"
        })`,
      });
    }
    const clashes = [
      c.mac !== undefined ? claimUnique(macs, c.index, c.mac) : undefined,
      // `%d` names are numbered by the kernel: they never clash.
      c.ifname !== undefined && !c.ifname.includes("%d")
        ? claimUnique(names, c.index, c.ifname)
        : undefined,
    ];
    errors.push(...clashes.filter((e): e is SpecError => e !== undefined));
  }
  errors.push(...checkCtrPlacement(ctrs, networks, ctrNetworkKey, networkKey));
  return errors;
}

/** UTF-8 length of a string without encoding it (lone surrogates count as U+FFFD, 3 bytes). */
export function utf8Length(s: string): number {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        n += 4;
        i++;
      } else n += 3;
    } else n += 3;
  }
  return n;
}
