/**
 * The shim's `start` and `delete` commands as containerd runs them (the real launcher,
 * bin/containerd-shim-nerdbox-v1): stdout bytes, the address file, the detached daemon shared by a
 * group, the DeleteResponse compared with Go's bytes, and the daemon's exit on Shutdown.
 */
import { deepEqual, equal, match, notEqual, ok } from "node:assert/strict";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import {
  DeleteResponseSchema,
  ShutdownRequestSchema,
} from "../../lib/shim/proto/gen/containerd/shim_pb.ts";
import { encodeDeleteResponse, encodeDeleteResponseParts } from "../../lib/shim/manager.ts";
import { groupOf, socketPath } from "../../lib/shim/address.ts";
import { FlagError, parseShimFlags } from "../../lib/shim/flags.ts";
import { runDirFor } from "../../lib/shim/rundir.ts";
import { TtrpcClient } from "../../lib/shim/ttrpc.ts";
import { listProcesses, runCommand } from "../helpers/procs.ts";

const REPO = new URL("../../", import.meta.url).pathname;
const SHIM = `${REPO}bin/containerd-shim-nerdbox-v1`;
const hex = (b: Uint8Array) => [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
const unhex = (s: string) => new Uint8Array(s.match(/../g)!.map((h) => parseInt(h, 16)));

Deno.test("DeleteResponse bytes equal Go's", async () => {
  const go = "08a1c1011089011a0b08c0ae9ad80610a8b59a6f";
  const msg = fromBinary(DeleteResponseSchema, unhex(go));
  equal(msg.pid, 24737);
  equal(msg.exitStatus, 137);
  const seconds = Number(msg.exitedAt!.seconds);
  const nanos = msg.exitedAt!.nanos;
  equal(hex(await encodeDeleteResponseParts(24737, 137, seconds, nanos)), go);
  equal(hex(toBinary(DeleteResponseSchema, msg)), go);
  // The runc shim's observed reply decodes the same way.
  const runc = fromBinary(
    DeleteResponseSchema,
    unhex("08a1c101108901" + "1a0c08c0ae9ad8061092d5ca8a01"),
  );
  equal(runc.exitStatus, 137);
  // Millisecond dates round-trip through the wire writer.
  const at = new Date(1_700_000_000_123);
  const back = fromBinary(
    DeleteResponseSchema,
    await encodeDeleteResponse({ pid: 0, exitStatus: 137, exitedAt: at }),
  );
  equal(back.pid, 0);
  equal(Number(back.exitedAt!.seconds) * 1000 + back.exitedAt!.nanos / 1e6, at.getTime());
});

Deno.test("Go-style flags: single and double dash, =value, the action last", () => {
  const f = parseShimFlags([
    "-namespace",
    "k8s.io",
    "-address",
    "/run/c.sock",
    "-publish-binary",
    "/usr/bin/containerd",
    "-id",
    "abc",
    "-debug",
    "start",
  ]);
  equal(f.namespace, "k8s.io");
  equal(f.address, "/run/c.sock");
  equal(f.publishBinary, "/usr/bin/containerd");
  equal(f.id, "abc");
  equal(f.debug, true);
  equal(f.action, "start");
  const g = parseShimFlags(["--namespace=x", "--id=y", "--bundle", "/b", "delete"]);
  deepEqual([g.namespace, g.id, g.bundle, g.action, g.debug], ["x", "y", "/b", "delete", false]);
  try {
    parseShimFlags(["-frob", "1", "start"]);
    ok(false);
  } catch (e) {
    ok(e instanceof FlagError);
    equal(e.message, "flag provided but not defined: -frob");
  }
  try {
    parseShimFlags(["-id"]);
    ok(false);
  } catch (e) {
    equal((e as Error).message, "flag needs an argument: -id");
  }
});

Deno.test("socket path: sha256 of address/ns/group under /run/containerd/s, ≤107 bytes", async () => {
  const p = await socketPath("/run/containerd/containerd.sock", "default", "nerdbox");
  const want = new Uint8Array(
    await crypto.subtle.digest(
      "SHA-256",
      new TextEncoder().encode("/run/containerd/containerd.sock/default/nerdbox"),
    ),
  );
  equal(p, `/run/containerd/s/${hex(want)}`);
  ok(p.length <= 107);
  equal(groupOf({}), "nerdbox");
  equal(groupOf({ "io.kubernetes.cri.sandbox-id": "pod1" }), "pod1");
});

function shim(args: string[], cwd: string, stdin?: Uint8Array) {
  return runCommand(SHIM, args, { cwd, stdin, env: { TTRPC_ADDRESS: "" } });
}

async function fdTarget(pid: number, fd: number): Promise<string> {
  return await Deno.readLink(`/proc/${pid}/fd/${fd}`);
}

async function daemonPid(socket: string): Promise<number | undefined> {
  return (await listProcesses()).find((p) => p.argv.includes("serve") && p.argv.includes(socket))
    ?.pid;
}

Deno.test("start prints only the address, detaches one daemon per group; delete; Shutdown", async () => {
  const tmp = await Deno.makeTempDir({ prefix: "nerdbox-shim-mgr-" });
  const address = `${tmp}/containerd.sock`; // nothing listens: events are not needed here
  const common = ["-namespace", "nbtest", "-address", address, "-publish-binary", "/bin/true"];
  const socket = await socketPath(address, "nbtest", "nerdbox");
  const bundles = [`${tmp}/b1`, `${tmp}/b2`];
  let pid: number | undefined;
  try {
    for (const b of bundles) {
      await Deno.mkdir(`${b}/rootfs`, { recursive: true });
      await Deno.writeTextFile(`${b}/config.json`, JSON.stringify({ annotations: {} }));
    }
    const t0 = performance.now();
    const s1 = await shim([...common, "-id", "c1", "start"], bundles[0]);
    const elapsed = performance.now() - t0;
    equal(s1.stderr, "");
    equal(s1.code, 0);
    equal(new TextDecoder().decode(s1.stdout), `unix://${socket}`);
    equal(await Deno.readTextFile(`${bundles[0]}/address`), `unix://${socket}`);
    pid = await daemonPid(socket);
    ok(pid, "the daemon runs after start returned");
    // detached: own session, stdio on /dev/null
    const stat = (await Deno.readTextFile(`/proc/${pid}/stat`)).split(") ")[1].split(" ");
    equal(Number(stat[3]), pid, "session id = daemon pid (setsid)");
    for (const fd of [0, 1, 2]) equal(await fdTarget(pid!, fd), "/dev/null");
    ok(elapsed < 60_000);

    // Same group: the same daemon's address, no second daemon; runtime options on stdin accepted.
    const s2 = await shim([...common, "-id", "c2", "start"], bundles[1], new Uint8Array([10, 0]));
    equal(s2.code, 0, s2.stderr);
    equal(new TextDecoder().decode(s2.stdout), `unix://${socket}`);
    equal(await daemonPid(socket), pid);

    // delete: a DeleteResponse on stdout, idempotent.
    for (let i = 0; i < 2; i++) {
      const d = await shim([...common, "-id", "c1", "-bundle", bundles[0], "delete"], bundles[0]);
      equal(d.code, 0, d.stderr);
      const r = fromBinary(DeleteResponseSchema, d.stdout);
      equal(r.exitStatus, 137);
      ok(Number(r.exitedAt?.seconds ?? 0) > 1_600_000_000);
    }
    const d2 = await shim([...common, "-id", "c2", "-bundle", bundles[1], "delete"], bundles[1]);
    equal(d2.code, 0, d2.stderr);

    // Shutdown with no containers: the daemon answers, exits and removes its socket.
    const client = await TtrpcClient.connect(socket);
    const reply = await client.call(
      "containerd.task.v2.Task",
      "Shutdown",
      toBinary(ShutdownRequestSchema, create(ShutdownRequestSchema, { id: "c1" })),
      { timeoutMs: 5000 },
    );
    equal(reply.length, 0);
    await client.done;
    for (let i = 0; i < 100 && await daemonPid(socket); i++) {
      await new Promise((r) => setTimeout(r, 100));
    }
    equal(await daemonPid(socket), undefined);
    equal(await Deno.lstat(socket).then(() => true, () => false), false);
    equal(await Deno.lstat(runDirFor(socket)).then(() => true, () => false), false);
  } finally {
    if (pid) {
      try {
        Deno.kill(pid, "SIGKILL");
      } catch { /* gone */ }
    }
    await Deno.remove(socket).catch(() => {});
    await Deno.remove(runDirFor(socket), { recursive: true }).catch(() => {});
    await Deno.remove(tmp, { recursive: true });
  }
});

Deno.test("start without -id fails with a message naming the flag, prints no address", async () => {
  const tmp = await Deno.makeTempDir({ prefix: "nerdbox-shim-mgr-" });
  try {
    const r = await shim(["-namespace", "x", "-address", `${tmp}/a.sock`, "start"], tmp);
    notEqual(r.code, 0);
    equal(r.stdout.length, 0);
    match(r.stderr, /missing required flag -id/);
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});
