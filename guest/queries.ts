/**
 * Init's answers to the host's QUERY frames: a container's cgroup counters (`stats`), the VM's
 * listening TCP ports (`listening`), new resource limits for a container (`update`, through
 * `crun update --resources`), and the guest pids in a container's cgroup (`pids`).
 */
import type { GuestQuery, GuestQueryFailure, GuestReply } from "../lib/guest_protocol.ts";
import {
  parseResourcesUpdate,
  ResourcesError,
  type ResourcesUpdate,
} from "../lib/linux_resources.ts";
import { readCgroupPids, readCgroupStats } from "./cgroup_stats.ts";
import { readListeningPorts } from "./loopback.ts";
import { crunCommand, crunGlobalArgs } from "./oci_runtime.ts";
import type { PodContainers } from "./pod_containers.ts";
import { envRecord } from "./workload.ts";

const CONTAINER_ID_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

/** A query init cannot answer, and why (sent as the REPLY's `reason`). */
class QueryError extends Error {
  /** Builds the error; `reason` classifies it for the host. */
  constructor(readonly reason: GuestQueryFailure, message: string) {
    super(message);
  }
}

/** The query's container id, checked; `pod` must exist (crun mode). */
function containerOf(
  q: { kind?: unknown; container?: unknown },
  pod: PodContainers | undefined,
): string {
  const { container } = q;
  if (typeof container !== "string" || !CONTAINER_ID_RE.test(container)) {
    throw new QueryError(
      "invalid",
      `${q.kind}: container ${JSON.stringify(container)}: expected a container id`,
    );
  }
  if (!pod) {
    throw new QueryError(
      "unsupported",
      `${q.kind}: this VM's workload runs without crun: it has no cgroup`,
    );
  }
  return container;
}

/** `read()` of a container's cgroup; its "has no cgroup" becomes a not_found QueryError. */
function inCgroup<T>(read: () => T): T {
  try {
    return read();
  } catch (err) {
    throw new QueryError("not_found", err instanceof Error ? err.message : String(err));
  }
}

/** Applies `resources` to running container `id` with `crun update`; throws crun's complaint. */
function crunUpdate(pod: PodContainers, id: string, resources: ResourcesUpdate): void {
  if (!pod.has(id)) throw new QueryError("not_found", `update: no container ${id} in this VM`);
  const file = `${pod.workDir}/update-${id}.json`;
  Deno.writeTextFileSync(file, JSON.stringify(resources));
  try {
    const crun = crunCommand();
    // Synchronous: the zombie reaper cannot take crun's status from Deno meanwhile.
    const out = new Deno.Command(crun.program, {
      args: [...crunGlobalArgs(), "update", "--resources", file, id],
      env: envRecord(crun.env),
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).outputSync();
    if (!out.success) {
      const why = new TextDecoder().decode(out.stderr).trim() || `status ${out.code}`;
      throw new QueryError("failed", `update: crun update ${id}: ${why}`);
    }
  } finally {
    try {
      Deno.removeSync(file);
    } catch { /* gone */ }
  }
}

/** The reply to QUERY payload `q` (already JSON-decoded); failures become `{error}`. */
export async function answerQuery(q: unknown, pod: PodContainers | undefined): Promise<GuestReply> {
  try {
    const query = (typeof q === "object" && q !== null ? q : {}) as Partial<GuestQuery> & {
      container?: unknown;
      resources?: unknown;
    };
    switch (query.kind) {
      case "listening":
        return { listening: readListeningPorts() };
      case "stats": {
        const id = containerOf(query, pod);
        await pod!.waitCreated(id, 5000); // just started: crun is still creating its cgroup
        return { stats: inCgroup(() => readCgroupStats(id)) };
      }
      case "pids": {
        const id = containerOf(query, pod);
        await pod!.waitCreated(id, 5000);
        return { pids: inCgroup(() => readCgroupPids(id)) };
      }
      case "update": {
        const id = containerOf(query, pod);
        let resources: ResourcesUpdate;
        try {
          resources = parseResourcesUpdate(query.resources);
        } catch (err) {
          if (err instanceof ResourcesError) {
            throw new QueryError("invalid", `update: ${err.message}`);
          }
          throw err;
        }
        await pod!.waitCreated(id, 5000);
        crunUpdate(pod!, id, resources);
        return { updated: true };
      }
      default:
        throw new QueryError(
          "invalid",
          `query: kind ${
            JSON.stringify(query.kind)
          }: expected "stats", "listening", "update" or "pids"`,
        );
    }
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    return { error: message, reason: err instanceof QueryError ? err.reason : "failed" };
  }
}
