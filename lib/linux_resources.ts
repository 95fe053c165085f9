/**
 * The part of an OCI `LinuxResources` (runtime-spec config-linux.md) nerdbox applies to a running
 * container with `crun update`: parsed by the shim from containerd's UpdateTaskRequest and again by
 * the guest from the QUERY frame (both sides of the VM boundary import this file). Every error
 * names the field, the value and what was expected. Device rules are checked and dropped: a
 * running container keeps the device rules it was created with (CRI resends them unchanged).
 */

/** Resource limits to change on a running container; absent fields are left as they are. */
export interface ResourcesUpdate {
  memory?: { limit?: number; reservation?: number; swap?: number };
  cpu?: { shares?: number; quota?: number; period?: number; cpus?: string; mems?: string };
  pids?: { limit: number };
  hugepageLimits?: Array<{ pageSize: string; limit: number }>;
  unified?: Record<string, string>;
}

/** A LinuxResources value nerdbox cannot apply: `field` is its JSON path. */
export class ResourcesError extends Error {
  /** Builds the error for `field` (e.g. `memory.limit`). */
  constructor(readonly field: string, message: string) {
    super(field ? `resources.${field}: ${message}` : `resources: ${message}`);
    this.name = "ResourcesError";
  }
}

type Obj = Record<string, unknown>;

const isObj = (v: unknown): v is Obj => typeof v === "object" && v !== null && !Array.isArray(v);
const show = (v: unknown): string => JSON.stringify(v) ?? String(v);

/** OCI fields nerdbox knows but does not change on a running container (cgroup v2 guest). */
const UNSUPPORTED: Record<string, string> = {
  blockIO: "block I/O limits cannot be changed on a running container here",
  network: "network classes are cgroup v1 only",
  rdma: "RDMA limits are not supported in the VM",
  "memory.kernel": "kernel memory limits are cgroup v1 only",
  "memory.kernelTCP": "kernel TCP memory limits are cgroup v1 only",
  "memory.swappiness": "swappiness is cgroup v1 only",
  "memory.disableOOMKiller": "disabling the OOM killer is cgroup v1 only",
  "memory.useHierarchy": "useHierarchy is cgroup v1 only",
  "memory.checkBeforeUpdate": "checkBeforeUpdate is not supported",
  "cpu.realtimeRuntime": "realtime CPU limits are cgroup v1 only",
  "cpu.realtimePeriod": "realtime CPU limits are cgroup v1 only",
  "cpu.idle": "cpu.idle is not supported",
  "cpu.burst": "cpu.burst is not supported",
};

/** The object at `path` with only `known` keys; null/absent values are dropped. */
function fields(v: unknown, path: string, known: string[]): Obj {
  if (!isObj(v)) throw new ResourcesError(path, `${show(v)}: expected an object`);
  const out: Obj = {};
  for (const [k, val] of Object.entries(v)) {
    const p = path ? `${path}.${k}` : k;
    if (val === null || val === undefined) continue;
    if (UNSUPPORTED[p]) throw new ResourcesError(p, `${show(val)}: ${UNSUPPORTED[p]}`);
    if (!known.includes(k)) {
      throw new ResourcesError(p, `unknown field (expected one of ${known.join(", ")})`);
    }
    out[k] = val;
  }
  return out;
}

/** An integer from `min` up to 2^53-1 (JSON numbers beyond lose precision). */
function int(v: unknown, path: string, min: number): number {
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < min) {
    throw new ResourcesError(path, `${show(v)}: expected an integer from ${min} to 2^53-1`);
  }
  return v;
}

/** A cpuset list such as `0-2,4` (empty: unchanged). */
function cpuset(v: unknown, path: string): string {
  if (typeof v !== "string" || !/^(\d+(-\d+)?)(,\d+(-\d+)?)*$|^$/.test(v)) {
    throw new ResourcesError(path, `${show(v)}: expected a list such as "0-2,4"`);
  }
  return v;
}

function memory(v: unknown): ResourcesUpdate["memory"] {
  const m = fields(v, "memory", ["limit", "reservation", "swap"]);
  const out: NonNullable<ResourcesUpdate["memory"]> = {};
  for (const k of ["limit", "reservation", "swap"] as const) {
    if (m[k] !== undefined) out[k] = int(m[k], `memory.${k}`, -1);
  }
  if (out.limit === 0) throw new ResourcesError("memory.limit", "0: expected -1 or a byte count");
  return out;
}

function cpu(v: unknown): ResourcesUpdate["cpu"] {
  const c = fields(v, "cpu", ["shares", "quota", "period", "cpus", "mems"]);
  const out: NonNullable<ResourcesUpdate["cpu"]> = {};
  if (c.shares !== undefined) out.shares = int(c.shares, "cpu.shares", 0);
  if (c.quota !== undefined) out.quota = int(c.quota, "cpu.quota", -1);
  if (c.period !== undefined) out.period = int(c.period, "cpu.period", 0);
  if (c.cpus !== undefined) out.cpus = cpuset(c.cpus, "cpu.cpus");
  if (c.mems !== undefined) out.mems = cpuset(c.mems, "cpu.mems");
  return out;
}

function devices(v: unknown): void {
  if (!Array.isArray(v)) throw new ResourcesError("devices", `${show(v)}: expected an array`);
  v.forEach((d, i) => {
    const r = fields(d, `devices[${i}]`, ["allow", "type", "major", "minor", "access"]);
    if (typeof r.allow !== "boolean") {
      throw new ResourcesError(`devices[${i}].allow`, `${show(r.allow)}: expected true or false`);
    }
  });
}

function hugepages(v: unknown): ResourcesUpdate["hugepageLimits"] {
  if (!Array.isArray(v)) {
    throw new ResourcesError("hugepageLimits", `${show(v)}: expected an array`);
  }
  return v.map((h, i) => {
    const p = `hugepageLimits[${i}]`;
    const r = fields(h, p, ["pageSize", "limit"]);
    if (typeof r.pageSize !== "string" || !/^\d+[KMG]B$/.test(r.pageSize)) {
      throw new ResourcesError(`${p}.pageSize`, `${show(r.pageSize)}: expected e.g. "2MB"`);
    }
    return { pageSize: r.pageSize, limit: int(r.limit, `${p}.limit`, 0) };
  });
}

function unified(v: unknown): Record<string, string> {
  if (!isObj(v)) throw new ResourcesError("unified", `${show(v)}: expected an object`);
  const out: Record<string, string> = {};
  for (const [k, val] of Object.entries(v)) {
    if (!/^[a-z]+\.[a-z0-9_.]+$/.test(k) || k.startsWith("cgroup.")) {
      throw new ResourcesError(`unified.${k}`, "expected a controller file such as memory.high");
    }
    if (typeof val !== "string" || /[\n\0]/.test(val)) {
      throw new ResourcesError(`unified.${k}`, `${show(val)}: expected a one-line string`);
    }
    out[k] = val;
  }
  return out;
}

/** Parses an OCI LinuxResources JSON value into what nerdbox applies; throws ResourcesError. */
export function parseResourcesUpdate(v: unknown): ResourcesUpdate {
  const r = fields(v, "", ["memory", "cpu", "pids", "devices", "hugepageLimits", "unified"]);
  const out: ResourcesUpdate = {};
  if (r.memory !== undefined) out.memory = memory(r.memory);
  if (r.cpu !== undefined) out.cpu = cpu(r.cpu);
  if (r.pids !== undefined) {
    const p = fields(r.pids, "pids", ["limit"]);
    if (p.limit === undefined) throw new ResourcesError("pids.limit", "missing");
    out.pids = { limit: int(p.limit, "pids.limit", -1) };
  }
  if (r.devices !== undefined) devices(r.devices);
  if (r.hugepageLimits !== undefined) {
    const h = hugepages(r.hugepageLimits)!;
    if (h.length > 0) out.hugepageLimits = h;
  }
  if (r.unified !== undefined) {
    const u = unified(r.unified);
    if (Object.keys(u).length > 0) out.unified = u;
  }
  return out;
}
