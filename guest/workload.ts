/**
 * Runs the workload (and exec'd processes) in the already-chrooted init: resolves the program
 * like execvp, spawns it with its args, env (only its own), cwd, uid and gid, and copies its
 * output to the channel. Terminal mode gives it a pty's slave as stdio and makes that pty its
 * controlling terminal in a session of its own (through the guest image's busybox `setsid -c`,
 * opened before chroot), so ^C, job control and SIGWINCH work.
 */
import * as c from "./libc.ts";
import type { GuestProcess } from "../lib/guest_protocol.ts";
import type { ChildProcess, spawn as nodeSpawnType } from "node:child_process";

/** Linux signal numbers by name (x86_64/arm64 share these). */
export const SIGNALS: Record<string, number> = {
  SIGHUP: 1,
  SIGINT: 2,
  SIGQUIT: 3,
  SIGILL: 4,
  SIGTRAP: 5,
  SIGABRT: 6,
  SIGBUS: 7,
  SIGFPE: 8,
  SIGKILL: 9,
  SIGUSR1: 10,
  SIGSEGV: 11,
  SIGUSR2: 12,
  SIGPIPE: 13,
  SIGALRM: 14,
  SIGTERM: 15,
  SIGSTKFLT: 16,
  SIGCHLD: 17,
  SIGCONT: 18,
  SIGSTOP: 19,
  SIGTSTP: 20,
  SIGTTIN: 21,
  SIGTTOU: 22,
  SIGURG: 23,
  SIGXCPU: 24,
  SIGXFSZ: 25,
  SIGVTALRM: 26,
  SIGPROF: 27,
  SIGWINCH: 28,
  SIGIO: 29,
  SIGPWR: 30,
  SIGSYS: 31,
};

let nodeSpawn: typeof nodeSpawnType | undefined;

/**
 * Loads node:child_process (terminal mode needs it; it costs ~50 ms of startup on the host and
 * far more under TCG, so it is loaded only when a terminal process is asked for).
 */
export async function loadTerminalSupport(): Promise<void> {
  nodeSpawn ??= (await import("node:child_process")).spawn;
}

/** fd of the guest image's busybox (O_CLOEXEC), run as `setsid -c` for terminal mode; -1 = none. */
let sessionHelperFd = -1;

/**
 * Opens the guest image's busybox for terminal mode; call before chroot (after it the container's
 * root is `/`). Without it a terminal workload gets the pty as stdio but no controlling terminal.
 */
export function openSessionHelper(path = "/bin/busybox"): void {
  if (sessionHelperFd >= 0) return;
  try {
    sessionHelperFd = c.open(path, c.O.RDONLY | c.O.CLOEXEC);
  } catch {
    sessionHelperFd = -1;
  }
}

/**
 * The program and argv for a terminal workload: through the session helper (exec'd by its
 * /proc/self/fd path, which works for a close-on-exec ELF) when it is open, else directly.
 */
export function terminalCommand(
  program: string,
  args: string[],
  env: Record<string, string>,
  helperFd = sessionHelperFd,
): { file: string; argv0: string; args: string[] } {
  if (helperFd < 0) return { file: program, argv0: args[0], args: args.slice(1) };
  // busybox's setsid runs execvp(args[0]): give it the name when its PATH lookup matches ours.
  const name = args[0].includes("/") || env.PATH !== undefined ? args[0] : program;
  return {
    file: `/proc/self/fd/${helperFd}`,
    argv0: "setsid",
    args: ["-c", name, ...args.slice(1)],
  };
}

/** The program could not be executed: exit status 127 (not found) or 126 (not executable). */
export class ExecError extends Error {
  /** Creates the error with the shell-like exit status. */
  constructor(readonly code: 126 | 127, message: string) {
    super(message);
    this.name = "ExecError";
  }
}

/** Where process output goes. */
export interface OutputSink {
  /** Delivers one chunk of stdout (fd 1) or stderr (fd 2); resolves when it is sent. */
  output(proc: number, fd: 1 | 2, data: Uint8Array): Promise<void>;
}

/** A started process. */
export interface Running {
  readonly id: number;
  readonly pid: number;
  /** Writes stdin bytes. */
  stdin(data: Uint8Array): Promise<void>;
  /** Closes stdin (sends ^D on a terminal). */
  stdinEof(): Promise<void>;
  /** Sends a signal to the process. */
  signal(signo: number): void;
  /** Sets the terminal size (terminal mode only). */
  resize(cols: number, rows: number): void;
  /** The exit status (128+n for signal n), once the output is drained. */
  readonly done: Promise<number>;
}

const DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/** How long to keep copying output after the process ended (a daemon may hold the pipe). */
const DRAIN_MS = 3000;

/** Parses `K=V` entries into a record (entries without `=` are ignored, as execve would keep them). */
export function envRecord(env: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const kv of env) {
    const i = kv.indexOf("=");
    if (i > 0) out[kv.slice(0, i)] = kv.slice(i + 1);
  }
  return out;
}

function executable(path: string): "ok" | "missing" | "denied" {
  try {
    const st = Deno.statSync(path);
    if (!st.isFile || ((st.mode ?? 0) & 0o111) === 0) return "denied";
    return "ok";
  } catch (err) {
    return err instanceof Deno.errors.PermissionDenied ? "denied" : "missing";
  }
}

/** Resolves argv[0] like execvp against PATH (absolute / relative-with-slash used as given). */
export function resolveProgram(arg0: string, env: Record<string, string>, cwd: string): string {
  if (arg0 === "") throw new ExecError(127, `exec: empty program name`);
  if (arg0.includes("/")) {
    const path = arg0.startsWith("/") ? arg0 : `${cwd.replace(/\/$/, "")}/${arg0}`;
    const r = executable(path);
    if (r === "missing") throw new ExecError(127, `exec: "${arg0}": no such file or directory`);
    if (r === "denied") throw new ExecError(126, `exec: "${arg0}": permission denied`);
    return path;
  }
  let denied = false;
  for (const dir of (env.PATH ?? DEFAULT_PATH).split(":")) {
    const path = `${dir || "."}/${arg0}`;
    const r = executable(path);
    if (r === "ok") return path;
    if (r === "denied" && Deno.statSync(path).isFile) denied = true;
  }
  if (denied) throw new ExecError(126, `exec: "${arg0}": permission denied`);
  throw new ExecError(127, `exec: "${arg0}": executable file not found in $PATH`);
}

async function pump(
  stream: ReadableStream<Uint8Array>,
  proc: number,
  fd: 1 | 2,
  sink: OutputSink,
): Promise<void> {
  for await (const chunk of stream) await sink.output(proc, fd, chunk);
}

function within(p: Promise<unknown>, ms: number): Promise<void> {
  let t: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    p.then(() => {}, () => {}),
    new Promise<void>((r) => (t = setTimeout(r, ms))),
  ]).finally(() => clearTimeout(t));
}

function commandOptions(p: GuestProcess, env: Record<string, string>): Deno.CommandOptions {
  // uid/gid only when they change something: with them Rust's spawn must fork() instead of
  // posix_spawn (vfork), which copies Deno's page tables — slow under TCG.
  const self = { uid: Deno.uid() ?? -1, gid: Deno.gid() ?? -1 };
  return {
    args: p.args.slice(1),
    cwd: p.cwd || "/",
    env,
    clearEnv: true,
    ...(p.uid !== self.uid || p.gid !== self.gid ? { uid: p.uid, gid: p.gid } : {}),
  };
}

function spawnError(err: unknown, arg0: string): Error {
  if (err instanceof Deno.errors.NotFound) {
    return new ExecError(127, `exec: "${arg0}": ${err.message}`);
  }
  if (err instanceof Deno.errors.PermissionDenied) {
    return new ExecError(126, `exec: "${arg0}": ${err.message}`);
  }
  return new ExecError(126, `exec: "${arg0}": ${err instanceof Error ? err.message : err}`);
}

/** Starts a process; throws ExecError (127/126) when it cannot be executed. */
export function startProcess(
  id: number,
  p: GuestProcess,
  sink: OutputSink,
  owned: Set<number>,
): Running {
  if (p.args.length === 0) {
    throw new ExecError(127, "exec: no program given (process.args is empty)");
  }
  const env = envRecord(p.env);
  const cwd = p.cwd || "/";
  try {
    if (!Deno.statSync(cwd).isDirectory) throw new Error("not a directory");
  } catch (err) {
    throw new ExecError(127, `exec: cwd "${cwd}": ${err instanceof Error ? err.message : err}`);
  }
  const program = resolveProgram(p.args[0], env, cwd);
  const launch = { id, p, program, env, sink, owned };
  return p.terminal ? startTerminal(launch) : startPiped(launch);
}

/** What starting one process needs: its frame id, spec, resolved program and environment. */
interface Launch {
  id: number;
  p: GuestProcess;
  program: string;
  env: Record<string, string>;
  sink: OutputSink;
  owned: Set<number>;
}

function startPiped({ id, p, program, env, sink, owned }: Launch): Running {
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command(program, {
      ...commandOptions(p, env),
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
  } catch (err) {
    throw spawnError(err, p.args[0]);
  }
  owned.add(child.pid);
  const output = Promise.all([
    pump(child.stdout, id, 1, sink),
    pump(child.stderr, id, 2, sink),
  ]);
  const writer = child.stdin.getWriter();
  let stdinQueue = Promise.resolve();
  const done = child.status.then(async (st) => {
    await within(output, DRAIN_MS);
    return st.code;
  });
  return {
    id,
    pid: child.pid,
    stdin(data) {
      stdinQueue = stdinQueue.then(() => writer.write(data)).catch(() => {});
      return stdinQueue;
    },
    stdinEof() {
      stdinQueue = stdinQueue.then(() => writer.close()).catch(() => {});
      return stdinQueue;
    },
    signal: (signo) => signalPid(child.pid, signo),
    resize: () => {},
    done,
  };
}

function signalPid(pid: number, signo: number): void {
  try {
    c.kill(pid, signo);
  } catch { /* already gone */ }
}

function startTerminal({ id, p, program, env, sink, owned }: Launch): Running {
  // Deno.Command's "inherit" uses Deno's own saved stdio handles, so the slave cannot be slipped
  // in with dup2; node:child_process takes raw fds. Not `detached`: the helper's setsid() must
  // succeed without forking (the child is not a group leader), then TIOCSCTTY on stdin.
  if (!nodeSpawn) throw new ExecError(126, "terminal mode: loadTerminalSupport() was not awaited");
  const spawnNode = nodeSpawn;
  const { master, slavePath } = c.openPty();
  let child: ChildProcess;
  let exited: Promise<number>;
  try {
    const slave = c.open(slavePath, c.O.RDWR | c.O.NOCTTY | c.O.CLOEXEC);
    try {
      c.setWinsize(master, 80, 24);
      const cmd = terminalCommand(program, p.args, env);
      child = spawnNode(cmd.file, cmd.args, {
        argv0: cmd.argv0,
        cwd: p.cwd || "/",
        env: { TERM: "xterm", ...env },
        uid: p.uid,
        gid: p.gid,
        stdio: [slave, slave, slave],
      });
      exited = new Promise<number>((resolve) => {
        child.once("exit", (code, signal) => {
          resolve(signal ? 128 + (SIGNALS[signal] ?? 0) : code ?? 0);
        });
        child.once("error", (err: Error & { code?: string }) => {
          resolve(err.code === "ENOENT" ? 127 : 126);
        });
      });
    } finally {
      c.close(slave);
    }
  } catch (err) {
    c.close(master);
    throw spawnError(err, p.args[0]);
  }
  const pid = child.pid ?? -1;
  if (pid > 0) owned.add(pid);
  const output = (async () => {
    const buf = new Uint8Array(16 * 1024);
    for (;;) {
      const n = await c.readAsync(master, buf).catch(() => 0); // EIO once the slave is closed
      if (n <= 0) return;
      await sink.output(id, 1, buf.slice(0, n));
    }
  })();
  let queue = Promise.resolve();
  const done = exited.then(async (code) => {
    await within(output, DRAIN_MS);
    return code;
  });
  return {
    id,
    pid,
    stdin(data) {
      const copy = new Uint8Array(data);
      queue = queue.then(() => c.writeAllAsync(master, copy)).catch(() => {});
      return queue;
    },
    stdinEof() {
      queue = queue.then(() => c.writeAllAsync(master, Uint8Array.of(4))).catch(() => {});
      return queue;
    },
    signal: (signo) => signalPid(pid, signo),
    resize(cols, rows) {
      try {
        c.setWinsize(master, cols, rows);
      } catch { /* closed */ }
    },
    done,
  };
}
