/**
 * `nerdbox run [flags] ROOTFS -- CMD [ARG…]` and `nerdbox run [flags] --bundle DIR [-- CMD…]`:
 * flags → SandboxSpec (through the one parser in lib/spec) → VmPlan → a VM; exits with the
 * workload's status, or 125 when nerdbox itself fails. `--dry-run` prints the plan instead.
 */
import { formatSpecError, type ProcessSpec, SpecValidationError } from "../spec/types.ts";
import { buildSandboxSpec } from "../spec/sandbox.ts";
import { OciReadError, readOciBundle } from "../spec/oci.ts";
import { planVm, resolveBackend } from "../vm/plan.ts";
import { createRunStateDir, ensureStateRoot, sweepDeadRuns } from "../vm/run_state.ts";
import { probeVnetHdr } from "../vm/libkrun_calls.ts";
import type { Backend, VmHandle, VmPlan, VmStdio } from "../vm/types.ts";
import type { CniSession } from "../net/cni_session.ts";
import { attachSpecToCni } from "./cni_flags.ts";
import { parseRunFlags, type RunFlags, RunUsageError, usage } from "./run_flags.ts";
import { dryRun, tryLoadLibkrun } from "./run_dryrun.ts";

export {
  parseAccel,
  parseLogLevel,
  parseRunFlags,
  type RunFlags,
  RunUsageError,
  usage,
} from "./run_flags.ts";

/** Exit status for nerdbox's own failures (docker's convention). */
export const EXIT_NERDBOX = 125;

const DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

function envEntries(flags: string[]): string[] {
  return flags.map((e) => {
    if (e.includes("=")) {
      if (e.startsWith("=")) {
        throw new RunUsageError(`--env: ${JSON.stringify(e)}: expected K=V or K`);
      }
      return e;
    }
    const v = Deno.env.get(e);
    if (v === undefined) {
      throw new RunUsageError(`--env: ${JSON.stringify(e)} is not set in this environment`);
    }
    return `${e}=${v}`;
  });
}

function mergeEnv(base: string[], extra: string[]): string[] {
  const key = (e: string) => e.slice(0, e.indexOf("="));
  const out = base.filter((b) => !extra.some((x) => key(x) === key(b)));
  return [...out, ...extra];
}

async function isDir(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isDirectory;
  } catch {
    return false;
  }
}

function absolute(path: string): string {
  return path.startsWith("/") ? path : `${Deno.cwd()}/${path}`.replace(/\/\.?$/, "");
}

/** The inputs for buildSandboxSpec from flags (reads the bundle when given). */
export async function sandboxInput(f: RunFlags) {
  const env = envEntries(f.env);
  const id = f.name ?? `run-${crypto.randomUUID().slice(0, 8)}`;
  if (f.bundle !== undefined) {
    if (f.positionals.length > 0) {
      throw new RunUsageError(
        `with --bundle give no ROOTFS (got ${JSON.stringify(f.positionals[0])})`,
      );
    }
    const b = await readOciBundle(f.bundle);
    const process: ProcessSpec = {
      ...b.process,
      args: f.command.length > 0 ? f.command : b.process.args,
      env: mergeEnv(b.process.env, env),
      cwd: f.workdir ?? b.process.cwd,
      terminal: f.tty || b.process.terminal,
    };
    const netns = f.netns ?? b.netnsPath;
    return {
      id,
      rootfs: b.rootfs,
      process,
      hostname: f.hostname ?? b.hostname,
      annotations: b.annotations,
      ...(netns !== undefined ? { netns } : {}),
    };
  }
  if (f.positionals.length !== 1) {
    throw new RunUsageError(
      f.positionals.length === 0
        ? "expected ROOTFS (a directory) or --bundle DIR"
        : `expected one ROOTFS before --, got ${
          f.positionals.map((p) => JSON.stringify(p)).join(" ")
        }`,
    );
  }
  if (f.command.length === 0) throw new RunUsageError("expected -- CMD [ARG...] after ROOTFS");
  const rootfs = absolute(f.positionals[0]);
  if (!(await isDir(rootfs))) {
    throw new RunUsageError(`ROOTFS ${JSON.stringify(rootfs)} is not a directory`);
  }
  const process: ProcessSpec = {
    args: f.command,
    env: mergeEnv([DEFAULT_PATH], env),
    cwd: f.workdir ?? "/",
    uid: 0,
    gid: 0,
    terminal: f.tty,
  };
  return {
    id,
    rootfs,
    process,
    ...(f.hostname !== undefined ? { hostname: f.hostname } : {}),
    ...(f.netns !== undefined ? { netns: f.netns } : {}),
  };
}

/** Where run keeps per-VM state (sockets, logs). */
export const RUN_STATE_ROOT = "/run/nerdbox";

function err(line: string): void {
  console.error(`nerdbox run: ${line}`);
}

/** Writes to a Deno stdio file without ever closing it. */
function unclosable(file: { write(p: Uint8Array): Promise<number> }): WritableStream<Uint8Array> {
  return new WritableStream({
    async write(chunk) {
      let off = 0;
      while (off < chunk.length) off += await file.write(chunk.subarray(off));
    },
  });
}

const FORWARDED_SIGNALS: Array<[Deno.Signal, number]> = [
  ["SIGINT", 2],
  ["SIGTERM", 15],
  ["SIGHUP", 1],
  ["SIGQUIT", 3],
  ["SIGUSR1", 10],
  ["SIGUSR2", 12],
];

/** Entry point of `nerdbox run`. */
export async function main(argv: string[]): Promise<number> {
  let flags: RunFlags;
  try {
    flags = parseRunFlags(argv);
  } catch (e) {
    err(`${(e as Error).message}\n(see nerdbox run --help)`);
    return EXIT_NERDBOX;
  }
  if (flags.help) {
    console.log(usage());
    return 0;
  }
  if (flags.json && !flags.dryRun) {
    err(
      "--json needs --dry-run (a run prints the workload's own output)\n(see nerdbox run --help)",
    );
    return EXIT_NERDBOX;
  }
  let plan: VmPlan;
  let stateDir: string | undefined;
  let cni: CniSession | undefined;
  let relay: SignalRelay | undefined;
  try {
    const input = await sandboxInput(flags);
    const { spec, warnings } = buildSandboxSpec({
      ...input,
      netFlags: flags.net,
      publish: flags.publish,
      ...(flags.cpus !== undefined ? { cpus: flags.cpus } : {}),
      ...(flags.memory !== undefined ? { memory: flags.memory } : {}),
      ...(flags.backend !== undefined ? { backend: flags.backend } : {}),
    });
    for (const w of warnings) err(`warning: ${w}`);
    if (flags.cni && !flags.dryRun) cni = await attachSpecToCni(spec, flags.cni);
    const backend = await resolveBackend(spec.backend, libkrunOpt(flags));
    if (flags.dryRun) {
      stateDir = `${RUN_STATE_ROOT}/${spec.id}`;
    } else {
      await ensureStateRoot(RUN_STATE_ROOT);
      await sweepDeadRuns(RUN_STATE_ROOT).catch(() => {}); // runs killed earlier, any backend
      // From here on a signal must end in cleanup, not kill the process with state left behind.
      relay = new SignalRelay();
      // Owned (owner.json) from its first moment: a run killed at any point is swept later.
      stateDir = await createRunStateDir(RUN_STATE_ROOT, `${spec.id.slice(0, 24)}-`);
    }
    plan = planVm(spec, {
      backend,
      stateDir,
      accel: flags.accel,
      netnsSource: flags.netns !== undefined ? "--netns" : "config.json netns",
      ...(flags.libkrun !== undefined || flags.logLevel !== undefined
        ? {
          libkrun: {
            ...(flags.libkrun !== undefined ? { path: flags.libkrun } : {}),
            ...(flags.logLevel !== undefined ? { logLevel: flags.logLevel } : {}),
          },
        }
        : {}),
      ...vnetCaps(backend, spec.networks.some((n) => n.vnetHdr), flags),
    });
  } catch (e) {
    relay?.close();
    await cni?.teardown().catch((x) => err((x as Error).message));
    if (stateDir !== undefined && !flags.dryRun) {
      await Deno.remove(stateDir, { recursive: true }).catch(() => {});
    }
    if (e instanceof SpecValidationError) {
      for (const x of e.errors) err(formatSpecError(x));
    } else if (e instanceof RunUsageError) {
      err(`${e.message}\n(see nerdbox run --help)`);
    } else if (e instanceof OciReadError) {
      err(e.message);
    } else {
      err((e as Error).message);
    }
    return EXIT_NERDBOX;
  }
  if (flags.dryRun) return await dryRun(plan, flags.json, flags.libkrun);
  try {
    return await runVm(plan, flags, relay ?? new SignalRelay());
  } finally {
    await cni?.teardown().catch((e) => err((e as Error).message));
  }
}

function libkrunOpt(f: RunFlags): { libkrunPath?: string } {
  return f.libkrun !== undefined ? { libkrunPath: f.libkrun } : {};
}

function vnetCaps(backend: Backend, wanted: boolean, f: RunFlags) {
  if (backend !== "libkrun" || !wanted) return {};
  const lib = tryLoadLibkrun(f.libkrun);
  if (lib instanceof Error) return {};
  return { libkrunCaps: { vnetHdr: probeVnetHdr(lib) } };
}

/** Forwards signals to the VM once it runs; remembers the first one that arrives before. */
class SignalRelay {
  handle: VmHandle | undefined;
  early: number | undefined;
  #listeners: Array<readonly [Deno.Signal, () => void]>;

  constructor() {
    this.#listeners = FORWARDED_SIGNALS.map(([name, no]) => {
      const fn = () => {
        if (this.handle) void this.handle.signal(no).catch(() => {});
        else this.early ??= no;
      };
      Deno.addSignalListener(name, fn);
      return [name, fn] as const;
    });
  }

  /** Stops listening. */
  close(): void {
    for (const [name, fn] of this.#listeners) Deno.removeSignalListener(name, fn);
    this.#listeners = [];
  }
}

async function runVm(plan: VmPlan, flags: RunFlags, relay: SignalRelay): Promise<number> {
  const stdio: VmStdio = {
    stdout: unclosable(Deno.stdout),
    stderr: unclosable(Deno.stderr),
    ...(flags.interactive ? { stdin: Deno.stdin.readable } : {}),
    terminal: flags.tty,
    onWarning: (msg) => err(`warning: ${msg}`),
  };
  try {
    if (relay.early !== undefined) {
      await Deno.remove(plan.stateDir, { recursive: true }).catch(() => {});
      err(`interrupted by signal ${relay.early} before the VM started`);
      return 128 + relay.early;
    }
    const { startVm } = await import("../vm/launch.ts");
    try {
      relay.handle = await startVm(plan, stdio);
    } catch (e) {
      await Deno.remove(plan.stateDir, { recursive: true }).catch(() => {});
      err(`cannot start the VM (${plan.backend}): ${(e as Error).message}`);
      return relay.early !== undefined ? 128 + relay.early : EXIT_NERDBOX;
    }
    if (relay.early !== undefined) {
      err(`interrupted by signal ${relay.early} while the VM was starting`);
      return 128 + relay.early;
    }
    if (flags.tty) {
      const { attachHostTerminal } = await import("./run_tty.ts");
      const detach = attachHostTerminal(relay.handle);
      relay.handle.exited.finally(detach);
    }
    const exit = await relay.handle.exited;
    if (exit.error) err(exit.error);
    return exit.code;
  } finally {
    relay.close();
    await relay.handle?.dispose();
  }
}
