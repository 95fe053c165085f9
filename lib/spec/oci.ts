/** Reading an OCI bundle's config.json: only the fields nerdbox uses, each validated. */
import { resolve } from "node:path";
import { type ProcessSpec, type SpecError, SpecValidationError } from "./types.ts";

/** Largest config.json read (4 MiB). */
export const MAX_CONFIG_BYTES = 4 * 1024 * 1024;

/** The annotation nerdctl sets to the netns it prepared for a VM runtime. */
export const NERDCTL_NETNS_ANNOTATION = "nerdctl/network-namespace";

/** What nerdbox takes from an OCI bundle. */
export interface OciBundle {
  /** Absolute bundle directory. */
  dir: string;
  /** Absolute root filesystem directory (root.path resolved against dir). */
  rootfs: string;
  process: ProcessSpec;
  hostname: string;
  annotations: Record<string, string>;
  /** linux.namespaces network path, or the nerdctl/network-namespace annotation. */
  netnsPath?: string;
  /** True when a mount targets /etc/resolv.conf (the caller provides DNS). */
  dnsMount?: boolean;
  /** The parsed JSON as read. */
  raw: unknown;
}

/** A config.json that cannot be read at all (missing, unreadable): not a validation problem. */
export class OciReadError extends Error {
  /** Builds the error for `path`. */
  constructor(path: string, cause: unknown) {
    super(`cannot read ${path}: ${cause instanceof Error ? cause.message : String(cause)}`);
    this.name = "OciReadError";
  }
}

type Json = unknown;
const isObject = (v: Json): v is Record<string, Json> =>
  typeof v === "object" && v !== null && !Array.isArray(v);

/**
 * Reads and validates `<dir>/config.json`. Throws OciReadError when it cannot be read, and
 * SpecValidationError (annotation `config.json`, field the JSON path) listing every bad field.
 */
export async function readOciBundle(dir: string): Promise<OciBundle> {
  const abs = resolve(dir);
  return parseOciConfig(await readConfigJson(`${abs}/config.json`), abs);
}

/**
 * Reads a config.json (at most 4 MiB) and parses its JSON. Throws OciReadError when it cannot be
 * read, SpecValidationError when it is too large or not JSON.
 */
export async function readConfigJson(path: string): Promise<unknown> {
  let text: string;
  try {
    const info = await Deno.stat(path);
    if (info.size > MAX_CONFIG_BYTES) {
      throw new SpecValidationError([{
        annotation: "config.json",
        field: "",
        value: path,
        message: `${path} is ${info.size} bytes: expected at most ${MAX_CONFIG_BYTES} (4 MiB)`,
      }]);
    }
    text = await readBounded(path);
  } catch (e) {
    if (e instanceof SpecValidationError) throw e;
    throw new OciReadError(path, e);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new SpecValidationError([{
      annotation: "config.json",
      field: "",
      value: path,
      message: `${path} is not valid JSON (${(e as Error).message}): expected an OCI runtime spec`,
    }]);
  }
}

/** The `annotations` of a parsed config.json, and an error for each non-string value. */
export function configAnnotations(raw: unknown): {
  annotations: Record<string, string>;
  errors: SpecError[];
} {
  const annotations: Record<string, string> = {};
  const errors: SpecError[] = [];
  const a = isObject(raw) ? raw.annotations : undefined;
  if (a === undefined) return { annotations, errors };
  if (!isObject(a)) {
    errors.push({
      annotation: "config.json",
      field: "annotations",
      value: JSON.stringify(a),
      message: "expected an object of string values",
    });
    return { annotations, errors };
  }
  for (const [k, v] of Object.entries(a)) {
    if (typeof v === "string") annotations[k] = v;
    else {
      errors.push({
        annotation: k,
        field: "",
        value: JSON.stringify(v) ?? "undefined",
        message: `expected a string value in config.json annotations, got ${
          v === null ? "null" : Array.isArray(v) ? "an array" : typeof v
        }`,
      });
    }
  }
  return { annotations, errors };
}

async function readBounded(path: string): Promise<string> {
  using f = await Deno.open(path);
  const buf = new Uint8Array(MAX_CONFIG_BYTES + 1);
  let n = 0;
  while (n < buf.length) {
    const r = await f.read(buf.subarray(n));
    if (r === null) break;
    n += r;
  }
  if (n > MAX_CONFIG_BYTES) throw new Error(`grew beyond ${MAX_CONFIG_BYTES} bytes while read`);
  return new TextDecoder("utf-8", { fatal: true }).decode(buf.subarray(0, n));
}

/** Validates an already parsed config.json; `dir` is the absolute bundle directory. */
export function parseOciConfig(raw: Json, dir: string): OciBundle {
  const errors: SpecError[] = [];
  const bad = (field: string, value: Json, message: string) =>
    errors.push({
      annotation: "config.json",
      field,
      value: typeof value === "string" ? value : JSON.stringify(value) ?? "undefined",
      message,
    });
  const str = (v: Json, field: string, required: boolean): string | undefined => {
    if (v === undefined && !required) return undefined;
    if (typeof v !== "string") {
      bad(field, v, required ? "expected a string (required)" : "expected a string");
      return undefined;
    }
    if (v.includes("\0")) {
      bad(field, v, "expected a string without NUL bytes");
      return undefined;
    }
    return v;
  };
  const strArray = (v: Json, field: string, required: boolean): string[] => {
    if (v === undefined && !required) return [];
    if (!Array.isArray(v)) {
      bad(field, v, "expected an array of strings");
      return [];
    }
    return v.map((x, i) => str(x, `${field}[${i}]`, true) ?? "");
  };
  const u32 = (v: Json, field: string): number => {
    if (v === undefined) return 0;
    if (typeof v !== "number" || !Number.isInteger(v) || v < 0 || v > 0xffffffff) {
      bad(field, v, "expected a whole number from 0 to 4294967295");
      return 0;
    }
    return v;
  };

  if (!isObject(raw)) {
    bad("", raw, "expected a JSON object (an OCI runtime spec)");
    throw new SpecValidationError(errors);
  }
  // root
  let rootfs = "";
  if (!isObject(raw.root)) bad("root", raw.root, "expected an object with root.path (required)");
  else {
    const p = str(raw.root.path, "root.path", true);
    if (p === "") bad("root.path", p, "expected a non-empty path");
    else if (p !== undefined) rootfs = resolve(dir, p);
  }
  // process
  const process: ProcessSpec = { args: [], env: [], cwd: "/", uid: 0, gid: 0, terminal: false };
  if (!isObject(raw.process)) {
    bad("process", raw.process, "expected an object with process.args (required)");
  } else {
    const p = raw.process;
    process.args = strArray(p.args, "process.args", true);
    if (Array.isArray(p.args) && p.args.length === 0) {
      bad("process.args", p.args, "expected at least one argument (the program)");
    }
    process.env = strArray(p.env, "process.env", false);
    process.env.forEach((e, i) => {
      if (e !== "" && !e.includes("=")) bad(`process.env[${i}]`, e, "expected KEY=VALUE");
    });
    const cwd = str(p.cwd, "process.cwd", false);
    if (cwd !== undefined) {
      if (!cwd.startsWith("/")) bad("process.cwd", cwd, "expected an absolute path");
      else process.cwd = cwd;
    }
    if (p.terminal !== undefined) {
      if (typeof p.terminal !== "boolean") {
        bad("process.terminal", p.terminal, "expected a boolean");
      } else process.terminal = p.terminal;
    }
    if (p.user !== undefined) {
      if (!isObject(p.user)) bad("process.user", p.user, "expected an object with uid and gid");
      else {
        process.uid = u32(p.user.uid, "process.user.uid");
        process.gid = u32(p.user.gid, "process.user.gid");
        const extra = p.user.additionalGids;
        if (extra !== undefined) {
          if (!Array.isArray(extra)) {
            bad("process.user.additionalGids", extra, "expected an array of group ids");
          } else {
            process.additionalGids = extra.map((g, i) =>
              u32(g, `process.user.additionalGids[${i}]`)
            );
          }
        }
      }
    }
  }
  const hostname = str(raw.hostname, "hostname", false) ?? "";
  // annotations
  const annotations: Record<string, string> = {};
  if (raw.annotations !== undefined) {
    if (!isObject(raw.annotations)) {
      bad("annotations", raw.annotations, "expected an object of string values");
    } else {
      for (const [k, v] of Object.entries(raw.annotations)) {
        const s = str(v, `annotations[${JSON.stringify(k)}]`, true);
        if (s !== undefined) annotations[k] = s;
      }
    }
  }
  // linux.namespaces
  let netnsPath: string | undefined;
  if (raw.linux !== undefined) {
    if (!isObject(raw.linux)) bad("linux", raw.linux, "expected an object");
    else if (raw.linux.namespaces !== undefined) {
      const ns = raw.linux.namespaces;
      if (!Array.isArray(ns)) bad("linux.namespaces", ns, "expected an array");
      else {
        ns.forEach((n, i) => {
          const f = `linux.namespaces[${i}]`;
          if (!isObject(n)) return bad(f, n, "expected an object with type");
          const type = str(n.type, `${f}.type`, true);
          const path = str(n.path, `${f}.path`, false);
          if (type === "network" && path !== undefined) {
            if (!path.startsWith("/")) bad(`${f}.path`, path, "expected an absolute path");
            else netnsPath = path;
          }
        });
      }
    }
  }
  const nerdctlNs = annotations[NERDCTL_NETNS_ANNOTATION];
  if (netnsPath === undefined && nerdctlNs !== undefined && nerdctlNs !== "") {
    if (!nerdctlNs.startsWith("/")) {
      bad(
        `annotations[${JSON.stringify(NERDCTL_NETNS_ANNOTATION)}]`,
        nerdctlNs,
        "expected an absolute path",
      );
    } else netnsPath = nerdctlNs;
  }
  // mounts
  let dnsMount = false;
  if (raw.mounts !== undefined) {
    if (!Array.isArray(raw.mounts)) bad("mounts", raw.mounts, "expected an array");
    else {
      raw.mounts.forEach((m, i) => {
        if (!isObject(m)) return bad(`mounts[${i}]`, m, "expected an object with destination");
        const d = str(m.destination, `mounts[${i}].destination`, true);
        if (d !== undefined && d.replace(/\/+$/, "") === "/etc/resolv.conf") dnsMount = true;
      });
    }
  }
  if (errors.length > 0) throw new SpecValidationError(errors);
  return {
    dir,
    rootfs,
    process,
    hostname,
    annotations,
    ...(netnsPath === undefined ? {} : { netnsPath }),
    dnsMount,
    raw,
  };
}
