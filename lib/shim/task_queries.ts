/**
 * The Task methods answered by asking the guest (QUERY frames): Update applies an OCI
 * LinuxResources to a crun container's cgroup, Pids lists the guest pids in it, Stats reads its
 * counters. The UpdateTaskRequest's Any is parsed here, at the edge; guest failures become
 * gRPC status codes by their reason.
 */
import { create } from "@bufbuild/protobuf";
import type { Any } from "@bufbuild/protobuf/wkt";
import * as pb from "./proto/gen/containerd/shim_pb.ts";
import { Code, TtrpcError } from "./ttrpc.ts";
import type { Container } from "./container.ts";
import { metricsAny } from "./cgroup_metrics.ts";
import { parseResourcesUpdate, ResourcesError, type ResourcesUpdate } from "../linux_resources.ts";
import { GuestQueryError, type QueryFailure } from "../vm/channel_queries.ts";

/** The Any type URL containerd's typeurl gives an OCI `specs.LinuxResources`. */
export const LINUX_RESOURCES_TYPE_URL =
  "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources";

const CODES: Record<QueryFailure, number> = {
  invalid: Code.INVALID_ARGUMENT,
  not_found: Code.NOT_FOUND,
  unsupported: Code.FAILED_PRECONDITION,
  failed: Code.UNKNOWN,
  timeout: Code.DEADLINE_EXCEEDED,
  not_running: Code.FAILED_PRECONDITION,
};

/** A TtrpcError for a failed guest query (its reason picks the code), prefixed with `what`. */
function queryError(what: string, err: unknown): TtrpcError {
  if (err instanceof TtrpcError) return err;
  const msg = err instanceof Error ? err.message : String(err);
  const code = err instanceof GuestQueryError ? CODES[err.reason] : Code.UNKNOWN;
  return new TtrpcError(code, `${what}: ${msg}`);
}

/**
 * Parses UpdateTaskRequest.resources: an Any holding the JSON of an OCI LinuxResources. Throws
 * an INVALID_ARGUMENT TtrpcError naming the field.
 */
export function parseUpdateResources(
  any: Pick<Any, "typeUrl" | "value"> | undefined,
): ResourcesUpdate {
  const bad = (msg: string) => new TtrpcError(Code.INVALID_ARGUMENT, `update: ${msg}`);
  if (!any || (any.typeUrl === "" && any.value.length === 0)) {
    throw bad("resources: missing (expected an OCI LinuxResources)");
  }
  if (any.typeUrl !== LINUX_RESOURCES_TYPE_URL) {
    throw bad(
      `resources: type ${JSON.stringify(any.typeUrl)}: expected ${LINUX_RESOURCES_TYPE_URL}`,
    );
  }
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(any.value));
  } catch (err) {
    throw bad(`resources: not JSON: ${err instanceof Error ? err.message : err}`);
  }
  try {
    return parseResourcesUpdate(json);
  } catch (err) {
    if (err instanceof ResourcesError) throw bad(err.message);
    throw err;
  }
}

/** Throws FAILED_PRECONDITION unless `c` runs, as a crun container in its VM, for `what`. */
function crunContainer(c: Container, what: string): void {
  if (c.init.state !== "running" || !c.vm) {
    throw new TtrpcError(
      Code.FAILED_PRECONDITION,
      `${what}: container ${JSON.stringify(c.id)} is ${c.init.state}, not running`,
    );
  }
  if (!c.vm.crun) {
    throw new TtrpcError(
      Code.FAILED_PRECONDITION,
      `${what}: container ${JSON.stringify(c.id)} runs in its own VM without crun (not a pod ` +
        `VM's container): it has no cgroup to change, and nerdbox does not resize a running VM`,
    );
  }
}

/** Update: applies the request's resources to the container's cgroup in the guest. */
export async function updateTask(c: Container, req: pb.UpdateTaskRequest): Promise<void> {
  const resources = parseUpdateResources(req.resources);
  crunContainer(c, "update");
  if (!c.vm!.update) {
    throw new TtrpcError(Code.FAILED_PRECONDITION, "update: this VM backend cannot ask its guest");
  }
  try {
    await c.vm!.update(resources);
  } catch (err) {
    throw queryError("update", err);
  }
}

/**
 * Pids: for a running crun container the guest pids in its cgroup (pids in the VM, not on the
 * host; exec'd processes are in that cgroup too); otherwise what the shim knows: the VMM (whose
 * pid is the task's) and the running exec'd processes.
 */
export async function taskPids(c: Container): Promise<pb.PidsResponse> {
  if (c.init.state === "running" && c.vm?.crun && c.vm.pids) {
    try {
      const pids = await c.vm.pids();
      return create(pb.PidsResponseSchema, { processes: pids.map((pid) => ({ pid })) });
    } catch (err) {
      throw queryError("pids", err);
    }
  }
  const processes = [c.init, ...c.execs.values()]
    .filter((p) => p.pid > 0 && p.state === "running")
    .map((p) => ({ pid: p.pid }));
  return create(pb.PidsResponseSchema, { processes });
}

/** Stats: the container's cgroup v2 counters read in the guest, as v2 Metrics. */
export async function taskStats(c: Container): Promise<pb.StatsResponse> {
  if (c.init.state !== "running" || !c.vm?.stats) {
    throw new TtrpcError(
      Code.FAILED_PRECONDITION,
      `container ${JSON.stringify(c.id)} is ${c.init.state}: it has no cgroup to report`,
    );
  }
  try {
    return create(pb.StatsResponseSchema, { stats: metricsAny(await c.vm.stats()) });
  } catch (err) {
    throw queryError("stats", err);
  }
}
