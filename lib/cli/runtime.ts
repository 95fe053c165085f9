/**
 * The OCI runtime command line (runc's verbs and global flags, runsc's spellings): `spec`,
 * `create`, `start`, `run`, `state`, `list`/`ps`, `kill`, `delete`, `exec`, `logs`, `features`,
 * over a state directory (`--root`). Errors print `nerdbox: …` on stderr (and to `--log`) and
 * exit 1, as runc does.
 */
import { VERSION } from "../version.ts";
import { cleanDeadRun, parseRunRecord, RUN_RECORD_FILE } from "../vm/run_state.ts";
import { isAlive } from "../proc.ts";
import { request } from "../runtime/control.ts";
import { execClient } from "../runtime/exec_server.ts";
import { featuresJson } from "../runtime/spec_template.ts";
import {
  currentStatus,
  listIds,
  ociState,
  readRecord,
  RuntimeError,
  sandboxPaths,
  type SandboxRecord,
  validateId,
} from "../runtime/state.ts";
import type { ProcessSpec } from "../spec/types.ts";
import { parseRuntimeArgs, parseSignal, type RuntimeArgs } from "./runtime_flags.ts";
import { createVerb, runVerb, specVerb, startSandbox } from "./runtime_create.ts";

function oneId(a: RuntimeArgs): string {
  if (a.positionals.length < 1) throw new RuntimeError(`${a.verb}: expected a container id`);
  return validateId(a.positionals[0]);
}

function print(v: unknown): void {
  console.log(JSON.stringify(v, null, 2));
}

async function stateVerb(a: RuntimeArgs): Promise<number> {
  print(ociState(await readRecord(a.global.root, oneId(a))));
  return 0;
}

async function listVerb(a: RuntimeArgs): Promise<number> {
  const recs: SandboxRecord[] = [];
  for (const id of await listIds(a.global.root)) {
    const r = await readRecord(a.global.root, id).catch(() => undefined);
    if (r) recs.push(r);
  }
  const format = (a.flags.format as string | undefined) ?? "table";
  if (a.flags.quiet === true) {
    for (const r of recs) console.log(r.id);
  } else if (format === "json") {
    print(recs.map(ociState));
  } else if (format === "table") {
    const rows = [["ID", "PID", "STATUS", "BUNDLE", "CREATED"]];
    for (const r of recs) {
      const s = ociState(r);
      rows.push([s.id, String(s.pid), s.status, s.bundle, r.created]);
    }
    const w = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
    for (const r of rows) console.log(r.map((c, i) => c.padEnd(w[i])).join("  ").trimEnd());
  } else {
    throw new RuntimeError(`--format: ${JSON.stringify(format)}: expected table or json`);
  }
  return 0;
}

/** `ps ID`: the host processes of the sandbox (supervisor, VMM); `ps` alone lists sandboxes. */
async function psVerb(a: RuntimeArgs): Promise<number> {
  if (a.positionals.length === 0) return await listVerb(a);
  const rec = await readRecord(a.global.root, oneId(a));
  const pids = currentStatus(rec) === "stopped"
    ? []
    : [rec.supervisor?.pid, rec.vmmPid].filter((p): p is number => p !== undefined);
  if (a.flags.format === "json") console.log(JSON.stringify(pids));
  else for (const p of ["PID", ...pids]) console.log(p);
  return 0;
}

async function killVerb(a: RuntimeArgs): Promise<number> {
  const id = oneId(a);
  if (a.positionals.length > 2) {
    throw new RuntimeError(`kill: expected ID [SIGNAL], got ${a.positionals.length} arguments`);
  }
  const signal = parseSignal(a.positionals[1] ?? "TERM");
  const rec = await readRecord(a.global.root, id);
  const status = currentStatus(rec);
  if (status !== "created" && status !== "running") {
    throw new RuntimeError(`cannot kill container ${JSON.stringify(id)}: it is ${status}`);
  }
  const reply = await request(sandboxPaths(a.global.root, id).control, id, {
    op: "kill",
    signal,
    all: a.flags.all === true,
  });
  if (!reply.ok) throw new RuntimeError(reply.error ?? `cannot kill ${JSON.stringify(id)}`);
  return 0;
}

async function waitGone(rec: SandboxRecord, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (rec.supervisor && isAlive(rec.supervisor)) {
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 50));
  }
  return true;
}

async function deleteVerb(a: RuntimeArgs): Promise<number> {
  const id = oneId(a);
  const force = a.flags.force === true;
  let rec: SandboxRecord;
  try {
    rec = await readRecord(a.global.root, id);
  } catch (e) {
    if (force && /does not exist/.test((e as Error).message)) return 0; // runc: --force tolerates it
    throw e;
  }
  const status = currentStatus(rec);
  if (status === "running" && !force) {
    throw new RuntimeError(
      `cannot delete container ${JSON.stringify(id)}: it is running (stop it first, or --force)`,
    );
  }
  if (status !== "stopped") {
    await request(sandboxPaths(a.global.root, id).control, id, { op: "kill", signal: 9, all: true })
      .catch(() => {});
    if (!(await waitGone(rec, 30_000)) && rec.supervisor) {
      try {
        Deno.kill(rec.supervisor.pid, "SIGKILL");
      } catch { /* gone */ }
      await waitGone(rec, 5_000);
    }
  }
  // A supervisor that died without cleaning up leaves its VM run dir: clean it the way runs do.
  if (rec.runDir) {
    const text = await Deno.readTextFile(`${rec.runDir}/${RUN_RECORD_FILE}`).catch(() => undefined);
    const run = text === undefined ? undefined : parseRunRecord(text);
    if (run && !isAlive(run.owner)) await cleanDeadRun(rec.runDir, run);
  }
  const paths = sandboxPaths(a.global.root, id);
  await Deno.remove(paths.control).catch(() => {}); // outside the dir when its path is long
  await Deno.remove(paths.dir, { recursive: true });
  return 0;
}

async function readProcessJson(
  path: string,
): Promise<Partial<ProcessSpec> & { user?: { uid?: number; gid?: number } }> {
  try {
    return JSON.parse(await Deno.readTextFile(path));
  } catch (e) {
    throw new RuntimeError(`exec --process ${JSON.stringify(path)}: ${(e as Error).message}`);
  }
}

async function execVerb(a: RuntimeArgs): Promise<number> {
  const id = oneId(a);
  const rec = await readRecord(a.global.root, id);
  if (currentStatus(rec) !== "running") {
    throw new RuntimeError(
      `cannot exec in container ${JSON.stringify(id)}: it is ${currentStatus(rec)}, not running`,
    );
  }
  const fromFile = a.flags.process !== undefined
    ? await readProcessJson(a.flags.process as string)
    : {};
  const args = fromFile.args ?? a.command ?? a.positionals.slice(1);
  if (!Array.isArray(args) || args.length === 0 || args.some((x) => typeof x !== "string")) {
    throw new RuntimeError(
      "exec: expected a command (ID -- CMD [ARG...], or --process FILE with args)",
    );
  }
  const env = [
    ...(Array.isArray(fromFile.env)
      ? fromFile.env
      : ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]),
    ...((a.flags.env as string[] | undefined) ?? []),
  ];
  const process: ProcessSpec = {
    args,
    env,
    cwd: (a.flags.cwd as string | undefined) ?? fromFile.cwd ?? "/",
    uid: fromFile.user?.uid ?? 0,
    gid: fromFile.user?.gid ?? 0,
    terminal: false,
  };
  if (a.flags.detach === true) return await detachedExec(a, id, process);
  const r = await execClient(sandboxPaths(a.global.root, id).control, id, process, {
    stdin: !Deno.stdin.isTerminal(),
  });
  if (r.error) console.error(`nerdbox: ${r.error}`);
  return r.code;
}

/** `exec -d`: a child `nerdbox exec` (its pid in --pid-file) runs the process and exits with it. */
async function detachedExec(a: RuntimeArgs, id: string, process: ProcessSpec): Promise<number> {
  const { selfCommand } = await import("../shim/manager.ts");
  const self = selfCommand();
  const file = `${sandboxPaths(a.global.root, id).dir}/exec-${
    crypto.randomUUID().slice(0, 8)
  }.json`;
  await Deno.writeTextFile(
    file,
    JSON.stringify({ ...process, user: { uid: process.uid, gid: process.gid } }),
  );
  const child = new Deno.Command(self.bin, {
    args: [...self.args, "--root", a.global.root, "exec", "--process", file, id],
    env: { NERDBOX_INVOKED_AS: "nerdbox" },
    stdin: "inherit",
    stdout: "inherit",
    stderr: "inherit",
    detached: true,
  }).spawn();
  child.unref();
  const pidFile = a.flags["pid-file"] as string | undefined;
  if (pidFile !== undefined) await Deno.writeTextFile(pidFile, String(child.pid));
  return 0;
}

async function logsVerb(a: RuntimeArgs): Promise<number> {
  const id = oneId(a);
  await readRecord(a.global.root, id);
  try {
    const f = await Deno.open(sandboxPaths(a.global.root, id).log);
    await f.readable.pipeTo(Deno.stdout.writable, { preventClose: true });
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  return 0;
}

async function startVerb(a: RuntimeArgs): Promise<number> {
  await startSandbox(a.global.root, oneId(a));
  return 0;
}

async function superviseVerb(a: RuntimeArgs): Promise<number> {
  const { supervise } = await import("../runtime/supervisor.ts");
  const console = a.flags.console as string | undefined;
  const code = await supervise({
    root: a.global.root,
    id: oneId(a),
    ...(console ? { console } : {}),
  });
  Deno.exit(code); // end now: nothing of the VM may keep this process (conmon waits on its pid)
}

const VERBS: Record<string, (a: RuntimeArgs) => Promise<number>> = {
  spec: specVerb,
  create: createVerb,
  start: startVerb,
  run: runVerb,
  state: stateVerb,
  list: listVerb,
  ps: psVerb,
  kill: killVerb,
  delete: deleteVerb,
  exec: execVerb,
  logs: logsVerb,
  features: () => {
    print(featuresJson(VERSION));
    return Promise.resolve(0);
  },
  _supervise: superviseVerb,
};

async function logError(a: RuntimeArgs | undefined, msg: string): Promise<void> {
  console.error(`nerdbox: ${msg}`);
  const log = a?.global.log;
  if (!log) return;
  const line = a.global.logFormat === "json"
    ? JSON.stringify({ level: "error", msg, time: new Date().toISOString() })
    : `time="${new Date().toISOString()}" level=error msg=${JSON.stringify(msg)}`;
  await Deno.writeTextFile(log, line + "\n", { append: true }).catch(() => {});
}

/** Entry point of the runtime verbs (argv from the first global flag or the verb on). */
export async function main(argv: string[]): Promise<number> {
  let a: RuntimeArgs | undefined;
  try {
    a = parseRuntimeArgs(argv);
    return await VERBS[a.verb](a);
  } catch (e) {
    await logError(a, e instanceof RuntimeError ? e.message : (e as Error).message);
    return 1;
  }
}
