/**
 * The shim's Stats answer: a container's cgroup v2 counters as the guest read them
 * (GuestCgroupStats) turned into containerd's `io.containerd.cgroups.v2.Metrics`, in the Any that
 * containerd (and its CRI plugin) decodes by that type URL.
 */
import { create, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import { type Any, AnySchema } from "@bufbuild/protobuf/wkt";
import {
  CPUStatSchema,
  MemoryEventsSchema,
  MemoryStatSchema,
  type Metrics,
  MetricsSchema,
  PidsStatSchema,
} from "./proto/gen/cgroups/metrics_v2_pb.ts";
import type { GuestCgroupStats } from "../guest_protocol.ts";

/** The Any type URL containerd registers the v2 metrics under (its full message name). */
export const METRICS_V2_TYPE_URL = "io.containerd.cgroups.v2.Metrics";

/** What containerd's cgroups library reports for a "max" limit. */
const MAX_U64 = (1n << 64n) - 1n;

/** `memory.stat` keys carried as they are (snake_case in the file, camelCase in the message). */
const MEMORY_STAT_KEYS = [
  "anon",
  "file",
  "kernel_stack",
  "slab",
  "sock",
  "shmem",
  "file_mapped",
  "file_dirty",
  "file_writeback",
  "anon_thp",
  "inactive_anon",
  "active_anon",
  "inactive_file",
  "active_file",
  "unevictable",
  "slab_reclaimable",
  "slab_unreclaimable",
  "pgfault",
  "pgmajfault",
  "workingset_refault",
  "workingset_activate",
  "workingset_nodereclaim",
  "pgrefill",
  "pgscan",
  "pgsteal",
  "pgactivate",
  "pgdeactivate",
  "pglazyfree",
  "pglazyfreed",
  "thp_fault_alloc",
  "thp_collapse_alloc",
] as const;

const CPU_STAT_KEYS = [
  "usage_usec",
  "user_usec",
  "system_usec",
  "nr_periods",
  "nr_throttled",
  "throttled_usec",
] as const;

const MEMORY_EVENT_KEYS = ["low", "high", "max", "oom", "oom_kill"] as const;

const camel = (k: string) => k.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase());

/** A counter as uint64: non-negative integers only, "max" as 2^64-1, anything else 0. */
function u64(v: number | "max" | undefined): bigint {
  if (v === "max") return MAX_U64;
  return typeof v === "number" && Number.isSafeInteger(v) && v >= 0 ? BigInt(v) : 0n;
}

/** Copies `keys` of a flat-keyed file into a message's camelCase fields. */
function fields(file: Record<string, number> | undefined, keys: readonly string[]) {
  const out: Record<string, bigint> = {};
  for (const k of keys) out[camel(k)] = u64(file?.[k]);
  return out;
}

/** The Metrics message for `stats`; a controller the guest did not report stays unset. */
export function cgroupMetrics(stats: GuestCgroupStats): Metrics {
  const { flat, single } = stats;
  const m = create(MetricsSchema);
  if (flat["cpu.stat"]) {
    m.cpu = create(
      CPUStatSchema,
      fields(flat["cpu.stat"], CPU_STAT_KEYS) as MessageInitShape<typeof CPUStatSchema>,
    );
  }
  if (flat["memory.stat"] || single["memory.current"] !== undefined) {
    m.memory = create(MemoryStatSchema, {
      ...(fields(flat["memory.stat"], MEMORY_STAT_KEYS) as MessageInitShape<
        typeof MemoryStatSchema
      >),
      usage: u64(single["memory.current"]),
      usageLimit: u64(single["memory.max"]),
      swapUsage: u64(single["memory.swap.current"]),
      swapLimit: u64(single["memory.swap.max"]),
      maxUsage: u64(single["memory.peak"]),
    });
  }
  if (flat["memory.events"]) {
    m.memoryEvents = create(
      MemoryEventsSchema,
      fields(flat["memory.events"], MEMORY_EVENT_KEYS) as MessageInitShape<
        typeof MemoryEventsSchema
      >,
    );
  }
  if (single["pids.current"] !== undefined) {
    m.pids = create(PidsStatSchema, {
      current: u64(single["pids.current"]),
      limit: u64(single["pids.max"]),
    });
  }
  return m;
}

/** `stats` as the Any a Stats response carries. */
export function metricsAny(stats: GuestCgroupStats): Any {
  return create(AnySchema, {
    typeUrl: METRICS_V2_TYPE_URL,
    value: toBinary(MetricsSchema, cgroupMetrics(stats)),
  });
}
