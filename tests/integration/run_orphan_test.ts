/**
 * `nerdbox run` killed with SIGKILL while the workload runs: nothing of the run may keep running.
 * QEMU has its own process group, so it is not killed with nerdbox; the guest init sees the
 * channel's host end close and powers off, QEMU exits, and passt (`-1`) exits with it. The dead
 * run's state dir stays until the next VM start sweeps it (its owner pid is gone).
 */
import assert from "node:assert/strict";
import { makeBusyboxRootfs } from "../helpers/rootfs.ts";
import {
  nerdboxRun,
  procsMentioning,
  stateDirOf,
  waitFor,
  waitProcsGone,
} from "../helpers/pod_run.ts";
import { parseRunRecord, RUN_RECORD_FILE } from "../../lib/vm/run_state.ts";

Deno.test("kill -9 of nerdbox run: QEMU and passt end by themselves; the next run sweeps the state dir", async () => {
  const rootfs = await makeBusyboxRootfs();
  try {
    const run = nerdboxRun([
      "--backend",
      "qemu",
      rootfs,
      "--",
      "sh",
      "-c",
      "echo WORKLOAD-RUNNING; exec /bin/sleep 600",
    ]);
    let stateDir: string;
    try {
      await waitFor(
        "the workload",
        run,
        () => Promise.resolve(/WORKLOAD-RUNNING/.test(run.output()) ? true : undefined),
      );
      stateDir = await waitFor("the run's state dir", run, () => stateDirOf(run.child.pid));
      const rec = parseRunRecord(await Deno.readTextFile(`${stateDir}/${RUN_RECORD_FILE}`));
      assert.ok(
        rec?.qemu && rec.passt && rec.virtiofsd?.length === 1,
        `owner.json names QEMU, passt and the rootfs's virtiofsd: ${JSON.stringify(rec)}`,
      );
      const procs = [...(await procsMentioning(stateDir)).values()];
      assert.ok(procs.some((a) => /qemu-system/.test(a)), `QEMU of the run: ${procs}`);
      assert.ok(procs.some((a) => /passt/.test(a)), `passt of the run: ${procs}`);
      assert.ok(procs.some((a) => /virtiofsd/.test(a)), `virtiofsd of the run: ${procs}`);
    } finally {
      run.child.kill("SIGKILL");
      await run.done;
    }
    const ms = await waitProcsGone(stateDir, 30_000);
    console.log(`QEMU, passt and virtiofsd of the SIGKILLed run gone ${ms} ms after the kill`);
    // What the guest saw: EOF on the nerdbox.ctl port once QEMU's chardev peer closed.
    const consoleText = await Deno.readTextFile(`${stateDir}/console.log`);
    assert.match(consoleText, /nerdbox-init: the host closed the channel: the host is gone/);
    // Nobody cleaned the dir yet; the next run does (its owner is dead).
    await Deno.stat(stateDir);
    const next = await nerdboxRun(["--backend", "qemu", rootfs, "--", "true"]).done;
    assert.equal(next.code, 0, next.output);
    await assert.rejects(Deno.stat(stateDir), Deno.errors.NotFound);
  } finally {
    await Deno.remove(rootfs, { recursive: true });
  }
});
