/**
 * Run records and the sweep of dead runs, against real processes and a real directory: a dir
 * whose owner is gone is cleaned (the process it recorded is killed), a live owner's dir, a dir
 * without a record and a record naming a reused pid are handled as such.
 */
import { deepEqual, equal, ok } from "node:assert/strict";
import {
  isAlive,
  parseRunRecord,
  procRef,
  RUN_RECORD_FILE,
  sweepDeadRuns,
  writeRunRecord,
} from "../../lib/vm/run_state.ts";

async function deadRef() {
  const c = new Deno.Command("sleep", { args: ["30"], stdout: "null", stderr: "null" }).spawn();
  const ref = procRef(c.pid)!;
  c.kill("SIGKILL");
  await c.status;
  return ref;
}

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
