/**
 * The cgroup v2 side of the guest's containers: crun puts container `id` in CONTAINERS_CGROUP/<id>
 * (guest/oci_runtime.ts); this reads its counters for the host's Stats (STATS frames) and tells
 * an OOM kill from any other SIGKILL (the parent's hierarchical `memory.events` oom_kill count);
 * lists the guest pids in a container's cgroup (Pids).
 */
import type { GuestCgroupStats } from "../lib/guest_protocol.ts";

/** Where the guest mounts the cgroup2 hierarchy. */
export const CGROUP_ROOT = "/sys/fs/cgroup";
/** The cgroup (below CGROUP_ROOT) every container's cgroup is created under. */
export const CONTAINERS_CGROUP = "/nerdbox";

const FLAT_FILES = ["cpu.stat", "memory.stat", "memory.events"];
const SINGLE_FILES = [
  "memory.current",
  "memory.max",
  "memory.peak",
  "memory.swap.current",
  "memory.swap.max",
  "pids.current",
  "pids.max",
];

/** Parses a flat-keyed cgroup file (`key value` lines); lines that are not that are skipped. */
export function parseFlatKeyed(text: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of text.split("\n")) {
    const m = line.match(/^([a-z_][a-z0-9_]*) (\d+)$/);
    if (m) out[m[1]] = Number(m[2]);
  }
  return out;
}

/** Parses a single-value cgroup file: a count or "max"; undefined when it is neither. */
export function parseSingle(text: string): number | "max" | undefined {
  const t = text.trim();
  if (t === "max") return "max";
  return /^\d+$/.test(t) ? Number(t) : undefined;
}

function read(path: string): string | undefined {
  try {
    return Deno.readTextFileSync(path);
  } catch {
    return undefined;
  }
}

/** The cgroup directory of container `id`. */
export function containerCgroup(id: string): string {
  return `${CGROUP_ROOT}${CONTAINERS_CGROUP}/${id}`;
}

/** Reads container `id`'s counters; throws when it has no cgroup (not created, or gone). */
export function readCgroupStats(id: string): GuestCgroupStats {
  const dir = containerCgroup(id);
  try {
    Deno.statSync(`${dir}/cgroup.procs`);
  } catch {
    throw new Error(`container ${id} has no cgroup in the VM (not running)`);
  }
  const stats: GuestCgroupStats = { flat: {}, single: {} };
  for (const f of FLAT_FILES) {
    const text = read(`${dir}/${f}`);
    if (text !== undefined) stats.flat[f] = parseFlatKeyed(text);
  }
  for (const f of SINGLE_FILES) {
    const text = read(`${dir}/${f}`);
    const v = text === undefined ? undefined : parseSingle(text);
    if (v !== undefined) stats.single[f] = v;
  }
  return stats;
}

/**
 * The guest pids in container `id`'s cgroup and the cgroups below it (its `cgroup.procs` files),
 * sorted; throws when it has no cgroup (not created, or gone).
 */
export function readCgroupPids(id: string): number[] {
  const pids = new Set<number>();
  const walk = (dir: string): void => {
    for (const line of (read(`${dir}/cgroup.procs`) ?? "").split("\n")) {
      if (/^\d+$/.test(line)) pids.add(Number(line));
    }
    try {
      for (const e of Deno.readDirSync(dir)) if (e.isDirectory) walk(`${dir}/${e.name}`);
    } catch { /* removed meanwhile */ }
  };
  const dir = containerCgroup(id);
  try {
    Deno.statSync(`${dir}/cgroup.procs`);
  } catch {
    throw new Error(`container ${id} has no cgroup in the VM (not running)`);
  }
  walk(dir);
  return [...pids].sort((a, b) => a - b);
}

/**
 * Tells whether a container's SIGKILL came from the OOM killer: the `oom_kill` count of
 * CONTAINERS_CGROUP (hierarchical over every container's cgroup, which crun removes with the
 * container) rose since the last look. Two containers killed at once by OOM and by a SIGKILL
 * could swap their reasons; each OOM kill is reported once.
 */
export class OomKills {
  #seen: number;

  /** Starts counting from the current value. */
  constructor(readonly dir = `${CGROUP_ROOT}${CONTAINERS_CGROUP}`) {
    this.#seen = this.#count();
  }

  #count(): number {
    const text = read(`${this.dir}/memory.events`);
    return text === undefined ? 0 : parseFlatKeyed(text).oom_kill ?? 0;
  }

  /** True when a process that ended with `code` (137: SIGKILL) was ended by the OOM killer. */
  killed(code: number): boolean {
    if (code !== 137) return false;
    const now = this.#count();
    if (now <= this.#seen) return false;
    this.#seen++;
    return true;
  }
}
