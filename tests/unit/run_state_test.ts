/**
 * Run records and the sweep of dead runs, against real processes and a real directory: a dir
 * whose owner is gone is cleaned (the process it recorded is killed), a live owner's dir, a dir
 * without a record and a record naming a reused pid are handled as such.
 */
import { deepEqual, equal, ok } from "node:assert/strict";
import {
  createRunStateDir,
  parseRunRecord,
  RUN_RECORD_FILE,
  runProcesses,
  sweepDeadRuns,
  writeRunRecord,
} from "../../lib/vm/run_state.ts";
import { isAlive, procRef } from "../../lib/proc.ts";
import { deadProcRef } from "../helpers/procs.ts";

const deadRef = deadProcRef;

Deno.test("procRef/isAlive: the running process, a dead one, a reused pid", async () => {
  const me = procRef(Deno.pid)!;
  ok(isAlive(me));
  ok(!isAlive(await deadRef()));
  ok(!isAlive({ pid: Deno.pid, start: String(Number(me.start) + 1) }), "start time differs");
});

Deno.test("parseRunRecord: only well-formed records", () => {
  equal(parseRunRecord("nope"), undefined);
  equal(parseRunRecord(JSON.stringify({ version: 2, owner: { pid: 5, start: "1" } })), undefined);
  equal(parseRunRecord(JSON.stringify({ version: 1, owner: { pid: 1, start: "1" } })), undefined);
  deepEqual(
    parseRunRecord(JSON.stringify({
      version: 1,
      owner: { pid: 5, start: "9" },
      qemu: { pid: "x" },
      netns: "/run/netns/a",
      tcRedirect: { tap: "nbxt1", dev: "eth0", txqlen: 0 },
    })),
    {
      version: 1,
      owner: { pid: 5, start: "9" },
      netns: "/run/netns/a",
      tcRedirect: { tap: "nbxt1", dev: "eth0", txqlen: 0 },
    },
  );
});

Deno.test("sweepDeadRuns: a dead owner's dir is removed and its recorded process killed; others kept", async () => {
  const root = await Deno.makeTempDir({ prefix: "nbx-runstate-" });
  const victim = new Deno.Command("sleep", { args: ["600"], stdout: "null", stderr: "null" })
    .spawn();
  try {
    for (const d of ["dead", "live", "norecord", "mine"]) await Deno.mkdir(`${root}/${d}`);
    await writeRunRecord(`${root}/dead`, {
      version: 1,
      owner: await deadRef(),
      passt: procRef(victim.pid)!,
    });
    await Deno.writeTextFile(`${root}/dead/rootfs.ext4`, "x");
    await writeRunRecord(`${root}/live`, { version: 1, owner: procRef(Deno.pid)! });
    await writeRunRecord(`${root}/mine`, { version: 1, owner: await deadRef() });
    await Deno.writeTextFile(`${root}/norecord/${RUN_RECORD_FILE}.txt`, "x");
    const swept = await sweepDeadRuns(root, `${root}/mine`);
    deepEqual(swept, [`${root}/dead`]);
    equal((await victim.status).signal, "SIGKILL");
    const left = (await Array.fromAsync(Deno.readDir(root))).map((e) => e.name).sort();
    deepEqual(left, ["live", "mine", "norecord"]);
  } finally {
    try {
      victim.kill("SIGKILL");
    } catch { /* already killed */ }
    await victim.status;
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("sweepDeadRuns: a dir with only the run's first record (owner gone) is swept", async () => {
  // `nerdbox run` writes {owner} the moment it creates the dir (lib/cli/run.ts), before any
  // backend ran: a run killed right then is still swept.
  const root = await Deno.makeTempDir({ prefix: "nbx-runstate-" });
  try {
    await Deno.mkdir(`${root}/early`);
    await writeRunRecord(`${root}/early`, { version: 1, owner: await deadRef() });
    deepEqual(await sweepDeadRuns(root), [`${root}/early`]);
    deepEqual(await Array.fromAsync(Deno.readDir(root)), []);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("sweepDeadRuns: a process the record missed is found by the run's socket path and killed", async () => {
  // The owner died between spawning passt and saving its pid: passt (here a real process with
  // passt's `-s <dir>/passt/passt.sock` on its command line) must not outlive the run.
  const root = await Deno.makeTempDir({ prefix: "nbx-runstate-" });
  const dir = `${root}/run1`;
  const other = `${root}/run10`;
  const spawn = (d: string) =>
    new Deno.Command("sh", {
      args: ["-c", "while :; do sleep 1; done", "passt-like", "-s", `${d}/passt/passt.sock`],
      stdout: "null",
      stderr: "null",
    }).spawn();
  const orphan = spawn(dir);
  const bystander = spawn(other); // a run dir whose name extends the dead one's: not touched
  try {
    await Deno.mkdir(dir);
    await writeRunRecord(dir, { version: 1, owner: await deadRef() });
    deepEqual((await runProcesses(dir)).map((r) => r.pid), [orphan.pid]);
    deepEqual(await sweepDeadRuns(root), [dir]);
    equal((await orphan.status).signal, "SIGKILL");
    ok(isAlive(procRef(bystander.pid)!), "the other run's process still runs");
  } finally {
    for (const c of [orphan, bystander]) {
      try {
        c.kill("SIGKILL");
      } catch { /* already killed */ }
      await c.status;
    }
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("createRunStateDir: the dir is 0700 and names this process as its owner from the start", async () => {
  const root = await Deno.makeTempDir({ prefix: "nbx-runstate-" });
  try {
    const dir = await createRunStateDir(root, "run-x-");
    ok(dir.startsWith(`${root}/run-x-`), dir);
    equal((await Deno.stat(dir)).mode! & 0o777, 0o700);
    const rec = parseRunRecord(await Deno.readTextFile(`${dir}/${RUN_RECORD_FILE}`));
    deepEqual(rec, { version: 1, owner: procRef(Deno.pid) });
    deepEqual(await sweepDeadRuns(root), [], "a live owner's dir is kept");
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
