/**
 * OCI state transitions through the runtime verbs on a real VM: create → created (the pid in
 * --pid-file is state's pid, a live supervisor, no VM yet) → start → running (a VMM child) → exec
 * and logs → kill KILL → stopped (pid 0, exit status 137 recorded) → delete → gone, nothing left.
 * Also: start of a running sandbox and delete of a running one without --force are refused.
 */
import assert from "node:assert/strict";
import { makeBusyboxRootfs } from "../helpers/rootfs.ts";
import { nb, nbOk, ociState, pidAlive, until } from "../helpers/runtime_cli.ts";
import { processesMatching } from "../helpers/nerdbox_cli.ts";

Deno.test("create/start/exec/logs/kill KILL/delete: created → running → stopped, statuses and pids as OCI says", async () => {
  const root = await Deno.makeTempDir({ prefix: "nbxlc-root-" });
  const bundle = await Deno.makeTempDir({ prefix: "nbxlc-bundle-" });
  const g = ["--root", root];
  const id = `nbxlc${crypto.randomUUID().slice(0, 8)}`;
  try {
    await makeBusyboxRootfs(`${bundle}/rootfs`);
    await nbOk([
      "spec",
      "-bundle",
      bundle,
      "--",
      "sh",
      "-c",
      "echo workload-started; exec sleep 300",
    ]);
    await nbOk([...g, "create", "--bundle", bundle, "--pid-file", `${root}/pid`, id]);
    const created = await ociState(g, id);
    assert.equal(created.status, "created");
    assert.equal(Number(await Deno.readTextFile(`${root}/pid`)), created.pid);
    assert.ok(pidAlive(created.pid));
    assert.deepEqual(
      (await processesMatching(id.slice(0, 24))).filter((p) => p !== created.pid).length,
      0,
      "no VM before start",
    );
    await nbOk([...g, "start", id]);
    const running = await ociState(g, id);
    assert.equal(running.status, "running");
    assert.equal(running.pid, created.pid, "the pid does not change at start");
    const pids = JSON.parse(await nbOk([...g, "ps", "--format", "json", id])) as number[];
    assert.equal(pids.length, 2, "supervisor and VMM");
    const again = await nb([...g, "start", id]);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /is running, not created/);
    const ex = await nb([...g, "exec", id, "--", "sh", "-c", "echo out; echo err >&2; exit 3"]);
    assert.equal(ex.code, 3, ex.stderr);
    assert.equal(ex.stdout, "out\n");
    assert.equal(ex.stderr, "err\n");
    assert.ok(
      await until(
        async () => (await nbOk([...g, "logs", id])).includes("workload-started"),
        60_000,
      ),
      "logs show the workload's output",
    );
    const del = await nb([...g, "delete", id]);
    assert.equal(del.code, 1);
    assert.match(del.stderr, /is running \(stop it first, or --force\)/);
    await nbOk([...g, "kill", id, "KILL"]);
    assert.ok(await until(async () => (await ociState(g, id)).status === "stopped", 30_000));
    const stopped = await ociState(g, id);
    assert.equal(stopped.pid, 0);
    const rec = JSON.parse(await Deno.readTextFile(`${root}/${id}/state.json`));
    assert.equal(rec.exitCode, 137);
    assert.ok(await until(() => !pidAlive(created.pid), 10_000), "the supervisor exited");
    const k = await nb([...g, "kill", id]);
    assert.equal(k.code, 1, "kill of a stopped sandbox fails");
    await nbOk([...g, "delete", id]);
    assert.deepEqual([...Deno.readDirSync(root)].map((e) => e.name), ["pid"]);
    assert.ok(
      await until(async () => (await processesMatching(id.slice(0, 24))).length === 0, 10_000),
      "no VMM left",
    );
  } finally {
    await nb([...g, "delete", "--force", id]);
    for (const d of [root, bundle]) await Deno.remove(d, { recursive: true });
  }
});
