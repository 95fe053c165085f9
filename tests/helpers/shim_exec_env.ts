/**
 * Helpers for shim tests driving a private containerd (tests/helpers/containerd.ts): waiting,
 * `ctr task ls` parsing, and the check that nothing of a container is left behind.
 */
import { equal } from "node:assert/strict";
import { type Containerd, IMAGE, mountsUnder, RUNTIME } from "./containerd.ts";
import { socketPath } from "../../lib/shim/address.ts";
import { runDirFor } from "../../lib/shim/rundir.ts";
import { exists } from "../../lib/fs.ts";
import { processesWith } from "./procs.ts";
import { assertSettlesEmpty, waitFor } from "./wait.ts";

export { processesWith, waitFor };

/** `ctr task ls` as {id: [pid, status]}. */
export async function tasks(ctd: Containerd): Promise<Record<string, [number, string]>> {
  const r = await ctd.ctr(["task", "ls"]);
  equal(r.code, 0, r.stderr);
  const out: Record<string, [number, string]> = {};
  for (const line of r.stdout.trim().split("\n").slice(1)) {
    const [id, pid, status] = line.trim().split(/\s+/);
    if (id) out[id] = [Number(pid), status];
  }
  return out;
}

/** Polls until nothing of containers `ids` in namespace `ns` is left, then asserts it. */
export async function assertNoLeftovers(ctd: Containerd, ids: string[], ns = "default") {
  const socket = await socketPath(ctd.address, ns, "nerdbox");
  const runDir = runDirFor(socket);
  const problems = async () => {
    const p: string[] = [];
    for (const d of await processesWith(socket)) p.push(`shim daemon alive: ${d}`);
    for (const q of await processesWith(runDir)) p.push(`VM process alive: ${q}`);
    for (const m of await mountsUnder(ctd.state)) p.push(`mount left: ${m}`);
    if (await exists(socket)) p.push(`socket left: ${socket}`);
    if (await exists(runDir)) p.push(`run dir left: ${runDir}`);
    for (const id of ids) {
      if (await exists(ctd.bundleDir(id, ns))) p.push(`bundle left: ${ctd.bundleDir(id, ns)}`);
    }
    return p;
  };
  await assertSettlesEmpty(problems);
}

/**
 * `ctr run -d` of IMAGE as `id` running `sh -c script`, stdout/stderr in a file (--log-uri);
 * resolves with the log's path once the workload printed `ready`.
 */
export async function runDetached(ctd: Containerd, id: string, script: string): Promise<string> {
  const log = `/run/${ctd.name}/${id}.log`;
  const r = await ctd.ctr(
    [
      "run",
      "-d",
      "--runtime",
      RUNTIME,
      "--log-uri",
      `file://${log}`,
      IMAGE,
      id,
      "sh",
      "-c",
      script,
    ],
    { timeoutMs: 150_000 },
  );
  equal(r.code, 0, r.stderr);
  await waitFor(`${id} to print ready`, async () => {
    const text = await Deno.readTextFile(log).catch(() => "");
    return text.includes("ready") || undefined;
  }, 120_000);
  return log;
}

/** `ctr events` running in the background: kill it, then read `text` (all it printed). */
export interface CtrEvents {
  kill(signo: Deno.Signal): void;
  status: Promise<Deno.CommandStatus>;
  text: Promise<string>;
  /** SIGKILLs it (if still running) and waits for it to end. */
  close(): Promise<void>;
}

/** Starts `ctr events` against `ctd`. */
export function ctrEvents(ctd: Containerd): CtrEvents {
  const events = ctd.spawnCtr(["events"]);
  const text = new Response(events.stdout).text();
  events.stderr.cancel();
  const close = async () => {
    try {
      events.kill("SIGKILL");
    } catch { /* done */ }
    await events.status;
  };
  return { kill: (signo) => events.kill(signo), status: events.status, text, close };
}

/** `ctr run --rm` as `id` of a workload that writes to both streams and exits 3: all comes through. */
export async function checkRunOutput(ctd: Containerd, id: string): Promise<void> {
  const r = await ctd.ctr(
    ["run", "--rm", "--runtime", RUNTIME, IMAGE, id, "sh", "-c", "echo out; echo err >&2; exit 3"],
    { timeoutMs: 150_000 },
  );
  equal(r.stdout, "out\n");
  equal(r.stderr, "err\n");
  equal(r.code, 3);
  await assertNoLeftovers(ctd, [id]);
}

/** Waits until `ctr task ls` shows task `id` STOPPED. */
export async function waitStopped(ctd: Containerd, id: string, ms = 60_000): Promise<void> {
  await waitFor(
    `${id} to stop`,
    async () => (await tasks(ctd))[id]?.[1] === "STOPPED" || undefined,
    ms,
  );
}
