/**
 * Faults under the shim, with a private containerd 1.6, ctr and real QEMU guests: kill -9 of the
 * guest workload (ctr task kill -s SIGKILL), of the shim daemon and of containerd itself in the
 * middle of a run.
 * Each ends in a correct status or a clean error, and after `ctr task delete` / `ctr container
 * rm` nothing is left: no shim, no VMM, no mount, no socket, no run dir (host snapshot diff).
 */
import { equal, notEqual, ok } from "node:assert/strict";
import {
  type Containerd,
  IMAGE,
  importBusyboxImage,
  RUNTIME,
  startContainerd,
} from "../helpers/containerd.ts";
import { assertNothingLeft, nerdboxProcesses, takeHostSnapshot } from "../helpers/host_snapshot.ts";
import { socketPath } from "../../lib/shim/address.ts";
import { runDirFor } from "../../lib/shim/rundir.ts";
import { waitFor } from "../helpers/wait.ts";

const R = ["--runtime", RUNTIME];
const ASPECTS = ["processes", "mounts", "runFiles", "netns"] as const;

async function taskStatus(ctd: Containerd, id: string): Promise<string | undefined> {
  const r = await ctd.ctr(["task", "ls"]);
  const line = r.stdout.split("\n").find((l) => l.trim().split(/\s+/)[0] === id);
  return line?.trim().split(/\s+/)[2];
}

/** Lines of the snapshot that belong to this containerd: its dirs, address and shims' run dir. */
async function scope(ctd: Containerd): Promise<RegExp> {
  const esc = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  const runDir = runDirFor(await socketPath(ctd.address, "default", "nerdbox"));
  return new RegExp([ctd.state, ctd.root, ctd.address, runDir].map(esc).join("|"));
}

Deno.test("faults (shim): kill -9 of the workload, of the shim daemon, of containerd mid-run", async (t) => {
  const before = await takeHostSnapshot({ aspects: ASPECTS });
  const ctd = await startContainerd("nbx-hard-ctd");
  try {
    await importBusyboxImage(ctd);

    await t.step("SIGKILL of the workload: ctr sees status 137, nothing left", async () => {
      const run = ctd.spawnCtr(["run", ...R, IMAGE, "fk1", "sh", "-c", "echo up; sleep 300"]);
      const out = run.output();
      await waitFor(
        "fk1 running",
        async () => (await taskStatus(ctd, "fk1")) === "RUNNING" ? true : undefined,
      );
      // wait until the workload really runs (its output arrived)
      await new Promise((r) => setTimeout(r, 1000));
      const k = await ctd.ctr(["task", "kill", "-s", "SIGKILL", "fk1"]);
      equal(k.code, 0, k.stderr);
      const r = await out;
      equal(r.code, 137, new TextDecoder().decode(r.stderr));
      const d = await ctd.ctr(["task", "delete", "fk1"]);
      ok(d.code === 0 || /not found/.test(d.stderr), d.stderr);
      equal((await ctd.ctr(["container", "rm", "fk1"])).code, 0);
    });

    await t.step("kill -9 of the shim daemon: the task ends, delete cleans up", async () => {
      const run = ctd.spawnCtr(["run", ...R, IMAGE, "fk2", "sh", "-c", "echo up; sleep 300"]);
      const out = run.output();
      await waitFor(
        "fk2 running",
        async () => (await taskStatus(ctd, "fk2")) === "RUNNING" ? true : undefined,
      );
      const shims = (await nerdboxProcesses()).filter((l) =>
        l.includes(ctd.address) && /containerd-shim-nerdbox|main\.ts shim/.test(l)
      );
      ok(shims.length > 0, "a shim daemon runs");
      for (const s of shims) Deno.kill(Number(s.split(" ")[0]), "SIGKILL");
      const r = await out;
      notEqual(r.code, 0, "ctr run does not report success for a task whose shim died");
      await ctd.ctr(["task", "delete", "-f", "fk2"], { timeoutMs: 60_000 });
      await ctd.ctr(["container", "rm", "fk2"], { timeoutMs: 30_000 });
      // The VMM of the dead shim must not outlive it: containerd's cleanup runs the shim's
      // `delete`, which must stop what the dead daemon started.
      const mine = await scope(ctd);
      const vmms = async () =>
        (await nerdboxProcesses()).filter((l) => /qemu-system|passt/.test(l) && mine.test(l));
      await waitFor(
        "no VMM of the dead shim",
        async () => (await vmms()).length === 0 ? true : undefined,
        30_000,
      ).catch(() => {});
      equal((await vmms()).join("\n"), "", "VMM processes left after the shim was killed");
    });

    await t.step(
      "kill -9 of containerd: the shim keeps the VM; stopping the shim leaves nothing",
      async () => {
        const run = ctd.spawnCtr(["run", ...R, IMAGE, "fk3", "sh", "-c", "echo up; sleep 300"]);
        const out = run.output();
        await waitFor(
          "fk3 running",
          async () => (await taskStatus(ctd, "fk3")) === "RUNNING" ? true : undefined,
        );
        const mine = await scope(ctd);
        const vmm = async () =>
          (await nerdboxProcesses()).filter((l) => /qemu-system/.test(l) && mine.test(l));
        equal((await vmm()).length, 1, "one VMM runs for fk3");
        Deno.kill(ctd.pid, "SIGKILL");
        await out.catch(() => {}); // ctr loses its connection
        // Runtime v2: shims outlive containerd; the VM must neither die with it nor be duplicated.
        await new Promise((r) => setTimeout(r, 2000));
        equal((await vmm()).length, 1, "the VM keeps running while containerd is down");
        // What remains is stopped by the shim itself on SIGTERM (ctd.stop, below): checked by the
        // host snapshot diff in `finally`.
      },
    );
  } finally {
    const only = await scope(ctd);
    await ctd.stop();
    await assertNothingLeft(before, { aspects: ASPECTS, only }, 20_000, "left by the shim");
  }
});
