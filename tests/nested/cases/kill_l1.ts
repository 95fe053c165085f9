/**
 * libkrun e2e, kill -9 (inside L1): of the VMM (`nerdbox vmm`, the process inside
 * krun_start_enter) — `nerdbox run` reports it and cleans up; and of `nerdbox run` itself — the
 * VMM ends by itself and the next run sweeps the dead run's state dir. Nothing is left.
 */
import assert from "node:assert/strict";
import { libkrunTest } from "../../helpers/kvm_guests.ts";
import { procsMentioning, stateDirOf, waitProcsGone } from "../../helpers/pod_run.ts";
import { assertNothingLeft, krun, spawnKrun, waitFor, withRootfs } from "./krun.ts";

const LOOP = "echo WORKLOAD-RUNNING; exec /bin/sleep 600";

libkrunTest(
  "libkrun: kill -9 of the VMM ends nerdbox run with an error, nothing left",
  () =>
    withRootfs("kvmm", async (rootfs, id) => {
      const child = spawnKrun(id, [rootfs, "--", "/bin/sh", "-c", LOOP]);
      const out = waitFor(child.stdout, /WORKLOAD-RUNNING/);
      const err = waitFor(child.stderr, /$^/);
      try {
        await out.matched;
        const dir = await stateDirOf(child.pid);
        assert.ok(dir, "the run's state dir names its owner");
        const vmm = [...(await procsMentioning(dir))].filter(([, a]) => !/sleep/.test(a));
        assert.equal(vmm.length, 1, `one VMM process: ${JSON.stringify(vmm)}`);
        Deno.kill(vmm[0][0], "SIGKILL");
        const st = await child.status;
        await out.done;
        await err.done;
        assert.notEqual(st.code, 0);
        assert.match(err.text(), /nerdbox run: /, err.text());
      } finally {
        try {
          child.kill("SIGKILL");
        } catch { /* already gone */ }
      }
    }),
);

libkrunTest(
  "libkrun: kill -9 of nerdbox run: the VMM ends by itself; the next run sweeps the dir",
  () =>
    withRootfs("knb", async (rootfs, id) => {
      const child = spawnKrun(id, [rootfs, "--", "/bin/sh", "-c", LOOP]);
      const out = waitFor(child.stdout, /WORKLOAD-RUNNING/);
      const err = waitFor(child.stderr, /$^/);
      await out.matched;
      const dir = await stateDirOf(child.pid);
      assert.ok(dir, "the run's state dir names its owner");
      child.kill("SIGKILL");
      await child.status;
      await out.done;
      await err.done;
      const ms = await waitProcsGone(dir, 120_000);
      console.log(`the VMM of the SIGKILLed run was gone ${ms} ms after the kill`);
      const next = await krun(`${id}-next`, [rootfs, "--", "/bin/true"]);
      assert.equal(next.code, 0, next.stderr);
      await assert.rejects(Deno.stat(dir), Deno.errors.NotFound);
      await assertNothingLeft(`${id}-next`);
    }),
);
