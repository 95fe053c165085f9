/**
 * The runtime CLI's state directory: one dir per sandbox under the root (`--root`, default
 * /run/nerdbox/runtime) holding `state.json` (a SandboxRecord), the supervisor's control socket
 * and the workload's log. Only the creating CLI (status `creating`) and then the sandbox's
 * supervisor write the record; everyone else reads it. Writes are atomic (tmp + rename).
 */
import { RUN_STATE_ROOT } from "../cli/run.ts";
import { isAlive, type ProcRef } from "../proc.ts";
import { SUN_PATH_MAX } from "../spec/socket_path.ts";

/** Default `--root`: beside the run state dirs, never swept by them (it has no owner.json). */
export const RUNTIME_STATE_ROOT = `${RUN_STATE_ROOT}/runtime`;

/** The OCI spec version nerdbox reports. */
export const OCI_VERSION = "1.0.2";

/** OCI runtime states. */
export type OciStatus = "creating" | "created" | "running" | "stopped";

/** What the sandbox's network is, for `state` annotations and `nerdbox inspect --sandbox`. */
export interface NetworkSummary {
  /** `tsi` (libkrun socket impersonation) or `nics`. */
  kind: "tsi" | "nics";
  /** Who provides the network, in words. */
  provider: string;
  /** Per NIC: guest name, provider mode (passt/gvproxy/tap…) and socket. */
  nics: Array<{ name: string; mode: string; socket: string }>;
  /** The caller's network namespace the VMM runs in, if any. */
  netns?: string;
}

/** `state.json`: one sandbox. */
export interface SandboxRecord {
  version: 1;
  id: string;
  /** Absolute bundle directory. */
  bundle: string;
  status: OciStatus;
  /** RFC 3339 creation time. */
  created: string;
  /** config.json annotations. */
  annotations: Record<string, string>;
  /** The supervisor: the process that lives exactly as long as the container. */
  supervisor?: ProcRef;
  /** The VMM process (QEMU, or the `nerdbox vmm` child) once booted. */
  vmmPid?: number;
  backend?: string;
  /** The VM's run state dir under /run/nerdbox (owned by the supervisor). */
  runDir?: string;
  network?: NetworkSummary;
  /** Workload exit status once stopped (128+n for signal n). */
  exitCode?: number;
  /** Why the sandbox stopped when nerdbox (not the workload) failed. */
  error?: string;
}

/** OCI state JSON as `state`/`list` print it. */
export interface OciState {
  ociVersion: string;
  id: string;
  status: OciStatus;
  pid: number;
  bundle: string;
  annotations: Record<string, string>;
  created?: string;
}

/** A runtime CLI failure: printed as is, exit status 1 (runc's). */
export class RuntimeError extends Error {
  /** Builds the error. */
  constructor(message: string) {
    super(message);
    this.name = "RuntimeError";
  }
}

const ID_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

/** Validates a container id (runc's charset, ≤ 128 chars, no path tricks). */
export function validateId(id: string | undefined): string {
  if (id === undefined || id === "") throw new RuntimeError("container id cannot be empty");
  if (!ID_RE.test(id) || id.includes("..")) {
    throw new RuntimeError(
      `invalid container id ${JSON.stringify(id)}: expected letters, digits and _ . - ` +
        "(starting with a letter or digit, at most 128 characters)",
    );
  }
  return id;
}

/** The files of one sandbox's dir. */
export interface SandboxPaths {
  dir: string;
  state: string;
  control: string;
  log: string;
}

/** Where control sockets go whose path under the root would not fit `sun_path` (SUN_PATH_MAX bytes). */
export const LONG_PATH_SOCKETS = `${RUN_STATE_ROOT}/runtime-ctl`;

function fnv1a64(text: string): string {
  let h = 0xcbf29ce484222325n;
  for (const b of new TextEncoder().encode(text)) {
    h = ((h ^ BigInt(b)) * 0x100000001b3n) & 0xffffffffffffffffn;
  }
  return h.toString(16).padStart(16, "0");
}

/**
 * The paths of sandbox `id` under `root`. The control socket lives in the sandbox dir unless that
 * path is too long for a UNIX socket (Docker's runtime roots with 64-hex ids are): then under
 * LONG_PATH_SOCKETS, named by a hash of the dir.
 */
export function sandboxPaths(root: string, id: string): SandboxPaths {
  const dir = `${root}/${id}`;
  let control = `${dir}/ctl.sock`;
  if (new TextEncoder().encode(control).length > SUN_PATH_MAX) {
    control = `${LONG_PATH_SOCKETS}/${fnv1a64(dir)}.sock`;
  }
  return { dir, state: `${dir}/state.json`, control, log: `${dir}/log` };
}

/** Writes the record atomically. */
export async function writeRecord(root: string, rec: SandboxRecord): Promise<void> {
  const p = sandboxPaths(root, rec.id);
  const tmp = `${p.state}.tmp-${Deno.pid}`;
  await Deno.writeTextFile(tmp, JSON.stringify(rec), { mode: 0o600 });
  await Deno.rename(tmp, p.state);
}

/** Reads sandbox `id`'s record; RuntimeError naming the id when there is none. */
export async function readRecord(root: string, id: string): Promise<SandboxRecord> {
  validateId(id);
  let text: string;
  try {
    text = await Deno.readTextFile(sandboxPaths(root, id).state);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new RuntimeError(`container ${JSON.stringify(id)} does not exist (root ${root})`);
    }
    throw new RuntimeError(
      `cannot read the state of ${JSON.stringify(id)}: ${(e as Error).message}`,
    );
  }
  let rec: SandboxRecord;
  try {
    rec = JSON.parse(text);
  } catch {
    throw new RuntimeError(`the state of ${JSON.stringify(id)} is not valid JSON (${root})`);
  }
  if (rec?.version !== 1 || rec.id !== id) {
    throw new RuntimeError(`the state of ${JSON.stringify(id)} is not a nerdbox sandbox record`);
  }
  return rec;
}

/**
 * The status as it is now: a record whose supervisor is gone is `stopped` whatever it says (the
 * supervisor died without recording it); a `creating` record without a supervisor whose creator
 * is gone counts as stopped too.
 */
export function currentStatus(rec: SandboxRecord): OciStatus {
  if (rec.status === "stopped") return "stopped";
  if (rec.supervisor === undefined) return rec.status;
  return isAlive(rec.supervisor) ? rec.status : "stopped";
}

/** The record as OCI state JSON. */
export function ociState(rec: SandboxRecord): OciState {
  const status = currentStatus(rec);
  const live = status === "created" || status === "running";
  return {
    ociVersion: OCI_VERSION,
    id: rec.id,
    status,
    pid: live && rec.supervisor ? rec.supervisor.pid : 0,
    bundle: rec.bundle,
    annotations: rec.annotations,
    created: rec.created,
  };
}

/** Every sandbox id under `root` (sorted); none when the root does not exist. */
export async function listIds(root: string): Promise<string[]> {
  const ids: string[] = [];
  try {
    for await (const e of Deno.readDir(root)) {
      if (e.isDirectory && ID_RE.test(e.name)) ids.push(e.name);
    }
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  return ids.sort();
}
