/**
 * Soak through containerd: one shim daemon (kept alive by a long-running container in the same
 * namespace) serves many sequential `ctr run --rm`; its open fds come back to the same count, its
 * memory does not keep growing, it spawns no process that stays, and after the keeper is removed
 * nothing is left on the host. Short in CI (3 runs); NERDBOX_SOAK=1 runs 20.
 */
import { equal, ok } from "node:assert/strict";
import { IMAGE, importBusyboxImage, RUNTIME, startContainerd } from "../helpers/containerd.ts";
import { assertNothingLeft, takeHostSnapshot } from "../helpers/host_snapshot.ts";
import { socketPath } from "../../lib/shim/address.ts";
import { runDirFor } from "../../lib/shim/rundir.ts";
import { childrenOf, shimPidsOf } from "../helpers/procs.ts";

const RUNS = Number(
  Deno.env.get("NERDBOX_SOAK_RUNS") ?? (Deno.env.get("NERDBOX_SOAK") === "1" ? 20 : 3),
);
const R = ["--runtime", RUNTIME];
const ASPECTS = ["processes", "mounts", "runFiles", "netns"] as const;

async function fdCount(pid: number): Promise<number> {
  return (await Array.fromAsync(Deno.readDir(`/proc/${pid}/fd`))).length;
}

async function rssKiB(pid: number): Promise<number> {
  const status = await Deno.readTextFile(`/proc/${pid}/status`);
  return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
}

/** Shim daemons of containerd `address` (argv `-address ADDRESS`, not a start/delete call). */
function shimDaemons(address: string): Promise<number[]> {
  return shimPidsOf(address, ["start", "delete"]);
}

async function children(pid: number): Promise<number[]> {
  return (await childrenOf(pid)).sort();
}

Deno.test(`soak (shim): ${RUNS} sequential ctr runs through one shim daemon leak nothing`, async () => {
  const before = await takeHostSnapshot({ aspects: ASPECTS });
  const ctd = await startContainerd("nbx-soak-ctd");
  const esc = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  const socket = await socketPath(ctd.address, "default", "nerdbox");
  const only = new RegExp(
    [ctd.state, ctd.root, ctd.address, socket, runDirFor(socket)].map(esc).join("|"),
  );
  try {
    await importBusyboxImage(ctd);
    const keeper = ctd.spawnCtr(["run", ...R, IMAGE, "keeper", "sh", "-c", "sleep 900"]);
    const keeperDone = keeper.output();
    let shim = 0;
    for (let i = 0; i < 600 && shim === 0; i++) {
      shim = (await shimDaemons(ctd.address))[0] ?? 0;
      if (!shim) await new Promise((r) => setTimeout(r, 200));
    }
    ok(shim > 0, "the shim daemon of the namespace runs");
    const run = async (i: number) => {
      const r = await ctd.ctr(["run", "--rm", ...R, IMAGE, `soak${i}`, "sh", "-c", `echo ${i}`], {
        timeoutMs: 150_000,
      });
      equal(r.code, 0, r.stderr);
      equal(r.stdout, `${i}\n`);
    };
    await run(0); // warm-up: first-use allocations
    equal((await shimDaemons(ctd.address)).length, 1, "one shim daemon serves the namespace");
    const fds0 = await fdCount(shim);
    const rss0 = await rssKiB(shim);
    const kids0 = await children(shim);
    for (let i = 1; i <= RUNS; i++) await run(i);
    await new Promise((r) => setTimeout(r, 1000));
    const fds1 = await fdCount(shim);
    const rss1 = await rssKiB(shim);
    equal(
      (await shimDaemons(ctd.address)).join(),
      String(shim),
      "the same daemon served every run",
    );
    equal(fds1, fds0, `the shim's open fds went from ${fds0} to ${fds1}`);
    ok(rss1 - rss0 < 64 * 1024, `the shim's RSS grew by ${(rss1 - rss0) >> 10} MiB`);
    equal((await children(shim)).join(","), kids0.join(","), "the shim kept extra children");
    const k = await ctd.ctr(["task", "kill", "-s", "SIGKILL", "keeper"]);
    equal(k.code, 0, k.stderr);
    await keeperDone;
    await ctd.ctr(["task", "delete", "keeper"], { timeoutMs: 60_000 });
    await ctd.ctr(["container", "rm", "keeper"], { timeoutMs: 30_000 });
  } finally {
    await ctd.stop();
    await assertNothingLeft(before, { aspects: ASPECTS, only }, 20_000, "left by the soak");
  }
});
