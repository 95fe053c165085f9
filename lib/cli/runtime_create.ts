/**
 * `create`, `run` and `spec`: making a sandbox. `create` validates the bundle, claims the id (the
 * sandbox dir is made with mkdir, so a duplicate fails atomically), starts the supervisor detached
 * and returns once it reports `created` (the VM is planned, not booted: `start` boots it). Any
 * failure removes what was made.
 */
import { resolve } from "node:path";
import { selfCommand } from "../shim/manager.ts";
import { isAlive } from "../proc.ts";
import { sandboxSpecOf } from "../runtime/prepare.ts";
import { defaultSpec } from "../runtime/spec_template.ts";
import {
  readRecord,
  RuntimeError,
  sandboxPaths,
  type SandboxRecord,
  validateId,
  writeRecord,
} from "../runtime/state.ts";
import { request } from "../runtime/control.ts";
import { closeFd, openPty, sendFd } from "../../ffi/pty.ts";
import type { RuntimeArgs } from "./runtime_flags.ts";
import { killHard } from "../helper_process.ts";

/** How long create waits for the supervisor to report `created`. */
const CREATED_WITHIN_MS = 60_000;

function str(a: RuntimeArgs, k: string): string | undefined {
  return a.flags[k] as string | undefined;
}

function oneId(a: RuntimeArgs): string {
  if (a.positionals.length !== 1) {
    throw new RuntimeError(
      `${a.verb}: expected exactly one container id, got ${a.positionals.length}` +
        (a.positionals.length > 1
          ? ` (${a.positionals.map((p) => JSON.stringify(p)).join(" ")})`
          : ""),
    );
  }
  return validateId(a.positionals[0]);
}

function abs(p: string): string {
  return resolve(p);
}

/** `spec`: writes `<bundle>/config.json` (refuses to overwrite one). */
export async function specVerb(a: RuntimeArgs): Promise<number> {
  if (a.flags.rootless === true) {
    throw new RuntimeError(
      "spec --rootless: nerdbox runs VMs as root; rootless specs are not supported",
    );
  }
  if (a.positionals.length > 0) {
    throw new RuntimeError(
      `spec: unexpected ${JSON.stringify(a.positionals[0])} (put the command after --)`,
    );
  }
  const cwd = str(a, "cwd") ?? "/";
  if (!cwd.startsWith("/")) {
    throw new RuntimeError(`spec --cwd: ${JSON.stringify(cwd)}: expected an absolute path`);
  }
  const netns = str(a, "netns");
  if (netns !== undefined && !netns.startsWith("/")) {
    throw new RuntimeError(`spec --netns: ${JSON.stringify(netns)}: expected an absolute path`);
  }
  const bundle = abs(str(a, "bundle") ?? ".");
  const path = `${bundle}/config.json`;
  const args = a.command && a.command.length > 0 ? a.command : ["sh"];
  const text = JSON.stringify(defaultSpec({ args, cwd, ...(netns ? { netns } : {}) }), null, 2);
  try {
    await Deno.writeTextFile(path, text + "\n", { createNew: true });
  } catch (e) {
    if (e instanceof Deno.errors.AlreadyExists) {
      throw new RuntimeError(`${path} exists: remove it first`);
    }
    throw new RuntimeError(`cannot write ${path}: ${(e as Error).message}`);
  }
  return 0;
}

/** A sandbox being created: its id, the supervisor child, its record once created. */
interface Created {
  id: string;
  child: Deno.ChildProcess;
  rec: SandboxRecord;
}

async function removeSandbox(root: string, id: string): Promise<void> {
  const paths = sandboxPaths(root, id);
  await Deno.remove(paths.control).catch(() => {});
  await Deno.remove(paths.dir, { recursive: true }).catch(() => {});
}

/** Creates sandbox `id` from `bundle`; `detachedIo` gives the supervisor no stdio. */
async function createSandbox(
  a: RuntimeArgs,
  id: string,
  detachedIo: boolean,
): Promise<Created> {
  const root = a.global.root;
  const bundle = abs(str(a, "bundle") ?? ".").replace(/\/+$/, "") || "/";
  const paths = sandboxPaths(root, id);
  await Deno.mkdir(root, { recursive: true, mode: 0o711 });
  try {
    await Deno.mkdir(paths.dir, { mode: 0o711 });
  } catch (e) {
    if (e instanceof Deno.errors.AlreadyExists) {
      throw new RuntimeError(`container ${JSON.stringify(id)} already exists (root ${root})`);
    }
    throw e;
  }
  let child: Deno.ChildProcess | undefined;
  let ptyMaster: number | undefined;
  try {
    const { spec, annotations } = await sandboxSpecOf(bundle, id);
    await writeRecord(root, {
      version: 1,
      id,
      bundle,
      status: "creating",
      created: new Date().toISOString(),
      annotations,
    });
    const consoleSocket = str(a, "console-socket");
    let consolePath: string | undefined;
    if (spec.process.terminal) {
      if (consoleSocket !== undefined) {
        const pty = openPty();
        ptyMaster = pty.master;
        sendFd(abs(consoleSocket), pty.master);
        consolePath = pty.slavePath;
      } else if (detachedIo) {
        throw new RuntimeError(
          "process.terminal is true but no --console-socket was given to receive the pty " +
            "(set terminal to false in config.json, or pass --console-socket)",
        );
      }
    }
    const self = selfCommand();
    child = new Deno.Command(self.bin, {
      args: [
        ...self.args,
        "--root",
        root,
        "_supervise",
        ...(consolePath ? ["--console", consolePath] : []),
        id,
      ],
      cwd: bundle,
      env: { NERDBOX_INVOKED_AS: "nerdbox" },
      stdin: detachedIo ? "null" : "inherit",
      stdout: detachedIo ? "null" : "inherit",
      stderr: detachedIo ? "null" : "inherit",
      detached: true,
    }).spawn();
    const rec = await waitCreated(root, id, child);
    if (ptyMaster !== undefined) closeFd(ptyMaster);
    return { id, child, rec };
  } catch (e) {
    if (ptyMaster !== undefined) {
      try {
        closeFd(ptyMaster);
      } catch { /* closed */ }
    }
    if (child) {
      killHard(child);
      await child.status;
    }
    await removeSandbox(root, id);
    throw e;
  }
}

async function waitCreated(
  root: string,
  id: string,
  child: Deno.ChildProcess,
): Promise<SandboxRecord> {
  let exited: Deno.CommandStatus | undefined;
  void child.status.then((s) => exited = s);
  const deadline = Date.now() + CREATED_WITHIN_MS;
  while (Date.now() < deadline) {
    const rec = await readRecord(root, id);
    if (rec.status === "created") return rec;
    if (rec.status === "stopped") {
      throw new RuntimeError(rec.error ?? `container ${JSON.stringify(id)} stopped while created`);
    }
    if (exited) {
      throw new RuntimeError(
        `container ${JSON.stringify(id)}: the supervisor exited with status ${exited.code} ` +
          "before reporting created",
      );
    }
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new RuntimeError(`container ${JSON.stringify(id)} was not created within 60 s`);
}

async function writePidFile(path: string | undefined, pid: number): Promise<void> {
  if (path === undefined) return;
  const p = abs(path);
  const tmp = `${p}.tmp-${Deno.pid}`;
  await Deno.writeTextFile(tmp, String(pid));
  await Deno.rename(tmp, p);
}

/** `create`: the sandbox exists, its supervisor runs, status `created`. */
export async function createVerb(a: RuntimeArgs): Promise<number> {
  const id = oneId(a);
  const c = await createSandbox(a, id, false);
  c.child.unref();
  await writePidFile(str(a, "pid-file"), c.child.pid);
  return 0;
}

/** Asks the supervisor to boot; the error names the id. */
export async function startSandbox(root: string, id: string): Promise<void> {
  const rec = await readRecord(root, id);
  if (rec.status !== "created" || !rec.supervisor || !isAlive(rec.supervisor)) {
    throw new RuntimeError(
      `cannot start container ${JSON.stringify(id)}: it is ${
        rec.status === "created" ? "stopped" : rec.status
      }, not created`,
    );
  }
  const reply = await request(sandboxPaths(root, id).control, id, { op: "start" });
  if (!reply.ok) throw new RuntimeError(reply.error ?? `cannot start ${JSON.stringify(id)}`);
}

/** `run [-d]`: create + start; in the foreground, waits and returns the workload's status. */
export async function runVerb(a: RuntimeArgs): Promise<number> {
  const id = oneId(a);
  const detach = a.flags.detach === true;
  const c = await createSandbox(a, id, detach);
  try {
    await startSandbox(a.global.root, id);
  } catch (e) {
    killHard(c.child);
    await c.child.status;
    await removeSandbox(a.global.root, id);
    throw e;
  }
  await writePidFile(str(a, "pid-file"), c.child.pid);
  if (detach) {
    c.child.unref();
    return 0;
  }
  const forward = (sig: number) => () =>
    void request(sandboxPaths(a.global.root, id).control, id, {
      op: "kill",
      signal: sig,
      all: false,
    })
      .catch(() => {});
  const sigs: Array<[Deno.Signal, () => void]> = [["SIGINT", forward(2)], ["SIGTERM", forward(15)]];
  for (const [s, fn] of sigs) Deno.addSignalListener(s, fn);
  const status = await c.child.status;
  for (const [s, fn] of sigs) Deno.removeSignalListener(s, fn);
  const rec = await readRecord(a.global.root, id).catch(() => undefined);
  if (a.flags.keep !== true) await removeSandbox(a.global.root, id);
  if (rec?.error) console.error(`nerdbox: ${rec.error}`);
  return rec?.exitCode ?? status.code;
}
