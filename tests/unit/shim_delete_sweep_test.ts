/**
 * The shim's `delete` after its daemon died: the dead daemon's runs are swept before its run dir
 * goes — a process it started that still waits (a passt QEMU never connected to: `passt -1` would
 * wait forever, re-parented to init) is killed. A real process stands in for passt, with passt's
 * `-s <stateDir>/passt/passt.sock` on its command line; the daemon died before recording it.
 */
import { equal, ok } from "node:assert/strict";
import { deleteCommand } from "../../lib/shim/manager.ts";
import { runDirFor } from "../../lib/shim/rundir.ts";
import { writeRunRecord } from "../../lib/vm/run_state.ts";
import { deadProcRef } from "../helpers/procs.ts";

const deadRef = deadProcRef;

Deno.test("shim delete of a dead daemon's container kills the passt it left and removes its run dir", async () => {
  const name = `nbxdel${crypto.randomUUID().replaceAll("-", "").slice(0, 10)}`;
  const socket = `/run/containerd/s/${name}`; // no daemon listens there: it is dead
  const runDir = runDirFor(socket);
  const stateDir = `${runDir}/1`;
  const bundle = await Deno.makeTempDir({ prefix: "nbx-del-sweep-" });
  await Deno.mkdir(stateDir, { recursive: true });
  await writeRunRecord(stateDir, { version: 1, owner: await deadRef() });
  const orphan = new Deno.Command("sh", {
    args: ["-c", "while :; do sleep 1; done", "passt-like", "-s", `${stateDir}/passt/passt.sock`],
    stdout: "null",
    stderr: "null",
  }).spawn();
  try {
    await Deno.writeTextFile(`${bundle}/address`, `unix://${socket}`);
    await deleteCommand({
      namespace: "default",
      address: "",
      publishBinary: "",
      id: "c1",
      bundle,
      debug: false,
      version: false,
      info: false,
      action: "delete",
      rest: [],
    });
    // delete returns after its sweep: the orphan is already dead (or dies within moments).
    const status = await Promise.race([
      orphan.status,
      new Promise<undefined>((r) => setTimeout(() => r(undefined), 5000)),
    ]);
    equal(status?.signal, "SIGKILL", "the passt-like orphan was killed");
    ok(!(await Deno.lstat(runDir).then(() => true, () => false)), "the run dir is removed");
  } finally {
    try {
      orphan.kill("SIGKILL");
    } catch { /* already killed */ }
    await orphan.status;
    await Deno.remove(runDir, { recursive: true }).catch(() => {});
    await Deno.remove(bundle, { recursive: true });
  }
});
