/**
 * The sandbox supervisor (`nerdbox _supervise ID`, started detached by `create`/`run -d`): the
 * long-lived process that holds the VM. It plans the VM and reports `created`; boots it when
 * `start` asks (`running`, the VMM's pid recorded); serves kill and exec over its control socket
 * through the VM handle (the guest channel); copies the workload's output to the sandbox log (and
 * to its inherited stdout/stderr or the console pty); records `stopped` with the exit status and
 * exits with it — so a parent waiting on its pid (conmon, containerd's runc shim) sees the
 * container's status. Its pid is the container's pid in OCI state.
 */
import { startVm } from "../vm/launch.ts";
import { procRef } from "../proc.ts";
import type { VmHandle, VmPlan, VmStdio } from "../vm/types.ts";
import { type ControlRequest, writeAll } from "./control.ts";
import { serveExec } from "./exec_server.ts";
import { networkSummary, planSandbox, sandboxSpecOf } from "./prepare.ts";
import {
  LONG_PATH_SOCKETS,
  readRecord,
  sandboxPaths,
  type SandboxRecord,
  writeRecord,
} from "./state.ts";
import { ConnReader } from "./control.ts";

/** Options of the supervisor. */
export interface SuperviseOptions {
  root: string;
  id: string;
  /** A pty slave path to use as the workload's terminal (`--console-socket`). */
  console?: string;
}

/** Output going to the log file and a second sink (errors on the second are ignored). */
function tee(
  log: Deno.FsFile,
  other: { write(p: Uint8Array): Promise<number> } | undefined,
): WritableStream<Uint8Array> {
  let otherOk = other !== undefined;
  return new WritableStream({
    async write(chunk) {
      await log.write(chunk).catch(() => 0);
      if (otherOk) {
        try {
          let off = 0;
          while (off < chunk.length) off += await other!.write(chunk.subarray(off));
        } catch {
          otherOk = false; // the reader went away (EPIPE): keep logging
        }
      }
    },
  });
}

/** Runs the supervisor; returns the exit status to exit with. */
export async function supervise(opts: SuperviseOptions): Promise<number> {
  const { root, id } = opts;
  const paths = sandboxPaths(root, id);
  let rec: SandboxRecord = await readRecord(root, id);
  rec.supervisor = procRef(Deno.pid)!;
  const save = (patch: Partial<SandboxRecord>) => {
    rec = { ...rec, ...patch };
    return writeRecord(root, rec);
  };
  let plan: VmPlan;
  try {
    const { spec } = await sandboxSpecOf(rec.bundle, id);
    plan = await planSandbox(spec);
    rec.network = networkSummary(spec, plan);
  } catch (e) {
    await save({ status: "stopped", exitCode: 1, error: (e as Error).message });
    return 1;
  }
  if (!paths.control.startsWith(`${paths.dir}/`)) {
    await Deno.mkdir(LONG_PATH_SOCKETS, { recursive: true, mode: 0o700 });
    await Deno.remove(paths.control).catch(() => {});
  }
  const listener = Deno.listen({ transport: "unix", path: paths.control });
  const log = await Deno.open(paths.log, { create: true, append: true, mode: 0o600 });
  const term = opts.console !== undefined
    ? await Deno.open(opts.console, { read: true, write: true })
    : undefined;
  const stdio: VmStdio = term
    ? { stdin: term.readable, stdout: tee(log, term), stderr: tee(log, term), terminal: true }
    : {
      stdin: Deno.stdin.readable,
      stdout: tee(log, Deno.stdout),
      stderr: tee(log, Deno.stderr),
      terminal: false,
    };
  stdio.onWarning = (m) => void log.write(new TextEncoder().encode(`nerdbox: warning: ${m}\n`));

  let handle: VmHandle | undefined;
  let killedWith: number | undefined;
  let finish!: (code: number) => void;
  const finished = new Promise<number>((r) => finish = r);

  const onStart = async (): Promise<string | undefined> => {
    if (rec.status !== "created") {
      return `container ${JSON.stringify(id)} is ${rec.status}, not created`;
    }
    try {
      handle = await startVm(plan, stdio);
    } catch (e) {
      const error = `cannot start the VM (${plan.backend}): ${(e as Error).message}`;
      await save({ status: "stopped", exitCode: 125, error });
      finish(125);
      return error;
    }
    await save({ status: "running", vmmPid: handle.pid });
    const h = handle;
    void h.exited.then(async (exit) => {
      await h.dispose();
      const code = killedWith !== undefined ? 128 + killedWith : exit.code;
      await save({
        status: "stopped",
        exitCode: code,
        ...(exit.error && killedWith === undefined ? { error: exit.error } : {}),
      });
      finish(code);
    });
    return undefined;
  };

  const onKill = async (signal: number): Promise<string | undefined> => {
    if (rec.status === "created") {
      await Deno.remove(plan.stateDir, { recursive: true }).catch(() => {});
      await save({ status: "stopped", exitCode: 128 + signal });
      finish(128 + signal);
      return undefined;
    }
    if (rec.status !== "running" || !handle) {
      return `container ${JSON.stringify(id)} is not running`;
    }
    if (signal === 9) {
      killedWith = 9;
      await handle.dispose();
      return undefined;
    }
    await handle.signal(signal);
    return undefined;
  };

  const serve = async (conn: Deno.UnixConn) => {
    const reader = new ConnReader(conn);
    let reply: string | undefined;
    try {
      const line = await reader.line();
      if (line === undefined) return;
      const req = JSON.parse(line) as ControlRequest;
      if (req.op === "exec") {
        await serveExec(
          conn,
          reader,
          req.process,
          rec.status === "running" ? handle : undefined,
          id,
        );
        return;
      }
      const error = req.op === "start"
        ? await onStart()
        : req.op === "kill"
        ? await onKill(req.signal)
        : `unknown request ${JSON.stringify((req as { op: unknown }).op)}`;
      reply = JSON.stringify(error === undefined ? { ok: true } : { ok: false, error });
      await writeAll(conn, new TextEncoder().encode(reply + "\n"));
    } catch (e) {
      const error = (e as Error).message;
      await writeAll(conn, new TextEncoder().encode(JSON.stringify({ ok: false, error }) + "\n"))
        .catch(() => {});
    } finally {
      try {
        conn.close();
      } catch { /* closed */ }
    }
  };
  void (async () => {
    for await (const conn of listener) void serve(conn);
  })().catch(() => {});

  // Signals sent to the supervisor itself reach the workload (as `nerdbox run` does).
  const forward = (no: number) => () => {
    if (handle) void handle.signal(no).catch(() => {});
    else void onKill(no);
  };
  const sigs: Array<[Deno.Signal, () => void]> = [
    ["SIGTERM", forward(15)],
    ["SIGINT", forward(2)],
    ["SIGHUP", forward(1)],
  ];
  for (const [s, fn] of sigs) Deno.addSignalListener(s, fn);

  await save({ status: "created" });
  const code = await finished;
  for (const [s, fn] of sigs) Deno.removeSignalListener(s, fn);
  listener.close();
  await Deno.remove(paths.control).catch(() => {});
  log.close();
  return code;
}
