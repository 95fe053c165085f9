/**
 * Update's resources at the edge (lib/shim/task_queries.ts: the Any's type URL and JSON) and the
 * OCI LinuxResources subset both sides of the VM boundary parse (lib/linux_resources.ts): every
 * rejection names the field; device rules are checked and dropped. updateTask's status codes.
 */
import assert from "node:assert/strict";
import { create } from "@bufbuild/protobuf";
import {
  LINUX_RESOURCES_TYPE_URL,
  parseUpdateResources,
  updateTask,
} from "../../lib/shim/task_queries.ts";
import * as pb from "../../lib/shim/proto/gen/containerd/shim_pb.ts";
import { type Container, Proc } from "../../lib/shim/container.ts";
import { GuestQueryError } from "../../lib/vm/channel_queries.ts";
import type { VmHandle } from "../../lib/vm/types.ts";
import { Code, TtrpcError } from "../../lib/shim/ttrpc.ts";
import {
  parseResourcesUpdate,
  ResourcesError,
  type ResourcesUpdate,
} from "../../lib/linux_resources.ts";
import { answerQuery } from "../../guest/queries.ts";

const any = (value: unknown, typeUrl = LINUX_RESOURCES_TYPE_URL) => ({
  typeUrl,
  value: new TextEncoder().encode(typeof value === "string" ? value : JSON.stringify(value)),
});

/** Asserts `fn` throws an INVALID_ARGUMENT TtrpcError whose message matches `re`. */
function invalid(fn: () => unknown, re: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof TtrpcError, String(e));
    assert.equal(e.code, Code.INVALID_ARGUMENT);
    assert.match(e.message, re);
    return true;
  });
}

Deno.test("parseUpdateResources: what CRI sends becomes the typed subset; devices are dropped", () => {
  const r = parseUpdateResources(any({
    devices: [{ allow: false, access: "rwm" }, { allow: true, type: "c", major: 1, minor: 3 }],
    memory: { limit: 134217728, swap: 134217728, reservation: null },
    cpu: { shares: 512, quota: 50000, period: 100000, cpus: "0-1,3", mems: "" },
    pids: { limit: -1 },
    hugepageLimits: [],
    unified: { "memory.high": "100000000" },
  }));
  assert.deepEqual(r, {
    memory: { limit: 134217728, swap: 134217728 },
    cpu: { shares: 512, quota: 50000, period: 100000, cpus: "0-1,3", mems: "" },
    pids: { limit: -1 },
    unified: { "memory.high": "100000000" },
  });
  assert.deepEqual(parseUpdateResources(any({})), {});
});

Deno.test("parseUpdateResources: a missing Any, a wrong type URL or bad JSON is INVALID_ARGUMENT", () => {
  invalid(() => parseUpdateResources(undefined), /resources: missing/);
  invalid(
    () =>
      parseUpdateResources(
        any({}, "types.containerd.io/opencontainers/runtime-spec/1/WindowsResources"),
      ),
    /type ".*WindowsResources": expected types\.containerd\.io\/opencontainers\/runtime-spec\/1\/LinuxResources/,
  );
  invalid(() => parseUpdateResources(any("{memory:")), /resources: not JSON/);
  invalid(() => parseUpdateResources(any("[1]")), /^update: resources: \[1\]: expected an object$/);
});

Deno.test("parseUpdateResources: unknown, unsupported and ill-typed fields are named", () => {
  invalid(
    () => parseUpdateResources(any({ memroy: {} })),
    /resources\.memroy: unknown field \(expected one of memory, cpu/,
  );
  invalid(
    () => parseUpdateResources(any({ memory: { limt: 5 } })),
    /resources\.memory\.limt: unknown field/,
  );
  invalid(
    () => parseUpdateResources(any({ memory: { limit: "1G" } })),
    /resources\.memory\.limit: "1G": expected an integer from -1/,
  );
  invalid(
    () => parseUpdateResources(any({ memory: { limit: 0 } })),
    /resources\.memory\.limit: 0: expected -1 or a byte count/,
  );
  invalid(
    () => parseUpdateResources(any({ memory: { limit: 2 ** 60 } })),
    /resources\.memory\.limit: .*2\^53-1/,
  );
  invalid(
    () => parseUpdateResources(any({ memory: { swappiness: 10 } })),
    /resources\.memory\.swappiness: 10: swappiness is cgroup v1 only/,
  );
  invalid(
    () => parseUpdateResources(any({ cpu: { shares: -2 } })),
    /resources\.cpu\.shares: -2: expected an integer from 0/,
  );
  invalid(
    () => parseUpdateResources(any({ cpu: { cpus: "0;reboot" } })),
    /resources\.cpu\.cpus: "0;reboot": expected a list/,
  );
  invalid(
    () => parseUpdateResources(any({ cpu: { realtimeRuntime: 5 } })),
    /resources\.cpu\.realtimeRuntime: 5: realtime/,
  );
  invalid(() => parseUpdateResources(any({ pids: {} })), /resources\.pids\.limit: missing/);
  invalid(
    () => parseUpdateResources(any({ blockIO: { weight: 10 } })),
    /resources\.blockIO: .*block I\/O/,
  );
  invalid(
    () => parseUpdateResources(any({ devices: [{ access: "rwm" }] })),
    /resources\.devices\[0\]\.allow: undefined: expected true or false/,
  );
  invalid(
    () => parseUpdateResources(any({ unified: { "cgroup.procs": "1" } })),
    /resources\.unified\.cgroup\.procs: expected a controller file/,
  );
  invalid(
    () => parseUpdateResources(any({ unified: { "memory.high": "1\n2" } })),
    /resources\.unified\.memory\.high: .*one-line/,
  );
  invalid(
    () => parseUpdateResources(any({ hugepageLimits: [{ pageSize: "2M", limit: 1 }] })),
    /resources\.hugepageLimits\[0\]\.pageSize: "2M"/,
  );
});

Deno.test("parseResourcesUpdate: the guest's own check throws ResourcesError with the field", () => {
  assert.throws(
    () => parseResourcesUpdate({ pids: { limit: 1.5 } }),
    (e: unknown) => e instanceof ResourcesError && e.field === "pids.limit",
  );
  assert.deepEqual(parseResourcesUpdate({ pids: { limit: 100 } }), { pids: { limit: 100 } });
});

Deno.test("guest answerQuery: update and pids need crun; bad queries are `invalid`", async () => {
  assert.deepEqual(await answerQuery({ kind: "pids", container: "web" }, undefined), {
    error: "pids: this VM's workload runs without crun: it has no cgroup",
    reason: "unsupported",
  });
  const bad = await answerQuery({ kind: "update", container: "../x", resources: {} }, undefined);
  assert.deepEqual(bad, {
    error: 'update: container "../x": expected a container id',
    reason: "invalid",
  });
  const odd = await answerQuery({ kind: "resize" }, undefined);
  assert.ok("reason" in odd && odd.reason === "invalid", JSON.stringify(odd));
});

/** A running container whose VM handle has `vm`'s fields (the parts updateTask reads). */
function running(vm: Partial<VmHandle>): Container {
  const init = new Proc("", { stdin: "", stdout: "", stderr: "", terminal: false });
  init.running(4242, () => Promise.resolve());
  return { id: "c1", init, execs: new Map(), vm: { pid: 4242, ...vm } } as unknown as Container;
}

Deno.test("updateTask: a plain VM (no crun) is FAILED_PRECONDITION; guest reasons pick the code", async () => {
  const req = (value: unknown) =>
    create(pb.UpdateTaskRequestSchema, { id: "c1", resources: any(value) });
  const code = async (c: Container, value: unknown): Promise<[number, string]> => {
    const err = await updateTask(c, req(value)).then(() => undefined, (e: unknown) => e);
    assert.ok(err instanceof TtrpcError, String(err));
    return [err.code, err.message];
  };
  const called: ResourcesUpdate[] = [];
  const plain = running({ crun: false, update: (r) => (called.push(r), Promise.resolve()) });
  const [c1, m1] = await code(plain, { pids: { limit: 5 } });
  assert.equal(c1, Code.FAILED_PRECONDITION);
  assert.match(m1, /runs in its own VM without crun/);
  assert.equal((await code(plain, { bogus: 1 }))[0], Code.INVALID_ARGUMENT, "parsed first");
  assert.equal(called.length, 0, "nothing reached the VM");

  const failing = (reason: ConstructorParameters<typeof GuestQueryError>[0]) =>
    running({ crun: true, update: () => Promise.reject(new GuestQueryError(reason, "m")) });
  assert.equal((await code(failing("not_found"), {}))[0], Code.NOT_FOUND);
  assert.equal((await code(failing("timeout"), {}))[0], Code.DEADLINE_EXCEEDED);
  assert.equal((await code(failing("not_running"), {}))[0], Code.FAILED_PRECONDITION);
  assert.deepEqual(await code(failing("failed"), {}), [Code.UNKNOWN, "update: m"]);
  const ok = running({ crun: true, update: (r) => (called.push(r), Promise.resolve()) });
  await updateTask(ok, req({ memory: { limit: 1 << 26 } }));
  assert.deepEqual(called, [{ memory: { limit: 1 << 26 } }]);
});
