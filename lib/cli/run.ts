/**
 * `nerdbox run [flags] ROOTFS -- CMD [ARG…]` and `nerdbox run [flags] --bundle DIR [-- CMD…]`:
 * flags → SandboxSpec (through the one parser in lib/spec) → VmPlan → a VM; exits with the
 * workload's status, or 125 when nerdbox itself fails. `--dry-run` prints the plan instead.
 */
import { parseArgs } from "node:util";
import { formatSpecError, type ProcessSpec, SpecValidationError } from "../spec/types.ts";
import { buildSandboxSpec } from "../spec/sandbox.ts";
import { OciReadError, readOciBundle } from "../spec/oci.ts";
import { KRUN_LOG_LEVEL, type KrunLogLevelName, type Libkrun } from "../../ffi/libkrun.ts";
import { loadLibkrun, locateLibkrun } from "../vm/libkrun_locate.ts";
import { planVm, resolveBackend } from "../vm/plan.ts";
import { validateNetnsPath } from "../net/netns.ts";
import { createRunStateDir, ensureStateRoot, sweepDeadRuns } from "../vm/run_state.ts";
import * as k from "../vm/libkrun.ts";
import type { Accel, Backend, VmHandle, VmPlan, VmStdio } from "../vm/types.ts";
import {
  attachSpecToCni,
  CNI_RUN_FLAGS,
  type CniRunFlags,
  cniRunFlags,
  type CniSession,
} from "../net/cni_session.ts";

/** Exit status for nerdbox's own failures (docker's convention). */
export const EXIT_NERDBOX = 125;

/**
 * The flag table. Each entry: parseArgs option + help line. Other features add their flags as a
 * block here (and read them from `RunFlags`).
 */
const FLAGS = {
  bundle: {
    type: "string",
    help: "--bundle DIR          run an OCI bundle (config.json + rootfs)",
  },
  net: {
    type: "string",
    multiple: true,
    help:
      "--net SPEC            attach a network (network annotation grammar; repeatable, in order)",
  },
  publish: {
    type: "string",
    short: "p",
    multiple: true,
    help: "-p, --publish [IP:]HOST:GUEST[/tcp|/udp]  publish a port (no network attached)",
  },
  cpus: { type: "string", help: "--cpus N              vCPUs (1-255, default 1)" },
  memory: { type: "string", help: "--memory SIZE         memory: MiB, or 512M / 1G (default 512)" },
  env: {
    type: "string",
    short: "e",
    multiple: true,
    help: "-e, --env K=V|K        set an env var (K alone: from this environment)",
  },
  workdir: {
    type: "string",
    short: "w",
    help: "-w, --workdir DIR     working directory in the container",
  },
  hostname: { type: "string", help: "--hostname NAME       guest hostname (default: from the id)" },
  name: { type: "string", help: "--name ID             sandbox id (default: run-<random>)" },
  interactive: {
    type: "boolean",
    short: "i",
    help: "-i, --interactive     forward stdin to the workload",
  },
  tty: {
    type: "boolean",
    short: "t",
    help: "-t, --tty             give the workload a terminal (its controlling tty; use with -i)",
  },
  backend: { type: "string", help: "--backend B           auto | libkrun | qemu (default auto)" },
  accel: {
    type: "string",
    help: "--accel A             QEMU accelerator: auto | kvm | tcg (default auto)",
  },
  netns: { type: "string", help: "--netns PATH          run the VMM in this network namespace" },
  libkrun: {
    type: "string",
    help: "--libkrun PATH        libkrun library (else NERDBOX_LIBKRUN, then system dirs)",
  },
  "log-level": {
    type: "string",
    help:
      "--log-level L         libkrun log: off|error|warn|info|debug|trace or 0-5 (shown on stderr)",
  },
  "dry-run": {
    type: "boolean",
    help: "--dry-run             print the plan (and libkrun calls applied to a real context)",
  },
  json: { type: "boolean", help: "--json                with --dry-run: one JSON object" },
  ...CNI_RUN_FLAGS,
  help: { type: "boolean", short: "h", help: "-h, --help            show this help" },
} as const;

/** The usage text. */
export function usage(): string {
  return [
    "Usage: nerdbox run [flags] ROOTFS -- CMD [ARG...]",
    "       nerdbox run [flags] --bundle DIR [-- CMD [ARG...]]",
    "",
    "Boots a microVM around ROOTFS (a directory) or an OCI bundle and runs the command in it.",
    "Exit status: the command's; 125 when nerdbox itself fails.",
    "",
    "Flags:",
    ...Object.values(FLAGS).map((f) => `  ${f.help}`),
  ].join("\n");
}

/** Flags as parsed (strings as given; lib/spec validates them). */
export interface RunFlags {
  bundle?: string;
  net: string[];
  publish: string[];
  cpus?: string;
  memory?: string;
  env: string[];
  workdir?: string;
  hostname?: string;
  name?: string;
  interactive: boolean;
  /** `-t`: the workload gets a pty in the guest. */
  tty: boolean;
  backend?: string;
  accel: Accel;
  netns?: string;
  libkrun?: string;
  logLevel?: number;
  dryRun: boolean;
  json: boolean;
  help: boolean;
  /** Positionals before `--`. */
  positionals: string[];
  /** Everything after `--`. */
  command: string[];
  /** `--cni` and its options (lib/net/cni_session.ts). */
  cni?: CniRunFlags;
}

/** A flag error (exit 125). */
export class RunUsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "RunUsageError";
  }
}

/** Parses `--log-level` (name or 0-5). */
export function parseLogLevel(text: string): number {
  if (/^[0-5]$/.test(text)) return Number(text);
  const n = KRUN_LOG_LEVEL[text.toLowerCase() as KrunLogLevelName];
  if (n === undefined) {
    throw new RunUsageError(
      `--log-level: ${JSON.stringify(text)}: expected off, error, warn, info, debug, trace or 0-5`,
    );
  }
  return n;
}

/** Parses `--accel`. */
export function parseAccel(text: string): Accel {
  if (text === "auto" || text === "kvm" || text === "tcg") return text;
  throw new RunUsageError(`--accel: ${JSON.stringify(text)}: expected auto, kvm or tcg`);
}

/** Parses argv (after `run`). */
export function parseRunFlags(argv: string[]): RunFlags {
  const dd = argv.indexOf("--");
  const before = dd < 0 ? argv : argv.slice(0, dd);
  const command = dd < 0 ? [] : argv.slice(dd + 1);
  const options = Object.fromEntries(
    Object.entries(FLAGS).map(([k, f]) => {
      const { help: _help, ...opt } = f;
      return [k, opt];
    }),
  ) as Record<string, { type: "string" | "boolean"; short?: string; multiple?: boolean }>;
  let values: Record<string, unknown>;
  let positionals: string[];
  try {
    ({ values, positionals } = parseArgs({
      args: before,
      options,
      allowPositionals: true,
      strict: true,
    }));
  } catch (e) {
    throw new RunUsageError((e as Error).message);
  }
  const s = (k: string) => values[k] as string | undefined;
  const list = (k: string) => (values[k] as string[] | undefined) ?? [];
  return {
    ...(s("bundle") !== undefined ? { bundle: s("bundle") } : {}),
    net: list("net"),
    publish: list("publish"),
    ...(s("cpus") !== undefined ? { cpus: s("cpus") } : {}),
    ...(s("memory") !== undefined ? { memory: s("memory") } : {}),
    env: list("env"),
    ...(s("workdir") !== undefined ? { workdir: s("workdir") } : {}),
    ...(s("hostname") !== undefined ? { hostname: s("hostname") } : {}),
    ...(s("name") !== undefined ? { name: s("name") } : {}),
    interactive: values.interactive === true,
    tty: values.tty === true,
    ...(s("backend") !== undefined ? { backend: s("backend") } : {}),
    accel: s("accel") === undefined ? "auto" : parseAccel(s("accel")!),
    ...(s("netns") !== undefined ? { netns: s("netns") } : {}),
    ...(s("libkrun") !== undefined ? { libkrun: s("libkrun") } : {}),
    ...(s("log-level") !== undefined ? { logLevel: parseLogLevel(s("log-level")!) } : {}),
    dryRun: values["dry-run"] === true,
    json: values.json === true,
    help: values.help === true,
    positionals,
    command,
    ...cniRunFlags(values),
  };
}

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
    if (spec.netns !== undefined && !flags.cni) {
      validateNetnsPath(spec.netns, flags.netns !== undefined ? "--netns" : "config.json netns");
    }
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
  if (flags.dryRun) return await dryRun(plan, flags);
  try {
    return await runVm(plan, flags, relay ?? new SignalRelay());
  } finally {
    await cni?.teardown().catch((e) => err((e as Error).message));
  }
}

function libkrunOpt(f: RunFlags): { libkrunPath?: string } {
  return f.libkrun !== undefined ? { libkrunPath: f.libkrun } : {};
}

function tryLoad(f: RunFlags): Libkrun | Error {
  try {
    return loadLibkrun(f.libkrun !== undefined ? { explicit: f.libkrun } : {});
  } catch (e) {
    return e as Error;
  }
}

function vnetCaps(backend: Backend, wanted: boolean, f: RunFlags) {
  if (backend !== "libkrun" || !wanted) return {};
  const lib = tryLoad(f);
  if (lib instanceof Error) return {};
  return { libkrunCaps: { vnetHdr: k.probeVnetHdr(lib) } };
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

function dryRun(plan: VmPlan, flags: RunFlags): Promise<number> {
  if (plan.backend !== "libkrun") {
    const out = { backend: plan.backend, plan, calls: [] };
    if (flags.json) console.log(JSON.stringify(out, null, 2));
    else {
      console.log(`backend: ${plan.backend} (no libkrun calls; the plan as QEMU gets it:)`);
      console.log(JSON.stringify(plan, null, 2));
    }
    return Promise.resolve(0);
  }
  return libkrunDryRun(plan, flags);
}

async function libkrunDryRun(plan: VmPlan, flags: RunFlags): Promise<number> {
  const lib = tryLoad(flags);
  const loc = (() => {
    try {
      return locateLibkrun(flags.libkrun !== undefined ? { explicit: flags.libkrun } : {}).path;
    } catch {
      return null;
    }
  })();
  const guest = await k.guestExec("<guest image>/root");
  const level = plan.libkrun?.logLevel ?? k.DEFAULT_VMM_LOG_LEVEL;
  const notRun = "not called (dry run)";
  const calls: Array<{ call: string; args: unknown[]; result: number | string }> = [];
  let failed: Error | undefined;
  let loadError: string | undefined;
  if (lib instanceof Error) {
    loadError = lib.message;
    const list = k.libkrunCalls(plan, {
      ctx: 0,
      guest,
      channelFd: 3,
      consoleLog: k.statePaths(plan.stateDir).consoleLog,
      vnetHdr: true,
    });
    const why = "not called: libkrun did not load";
    calls.push({ call: "krun_init_log", args: [-1, level, 0, 0], result: why });
    calls.push({ call: "krun_create_ctx", args: [], result: why });
    for (const c of list) calls.push({ ...c, result: why });
  } else {
    const vnetHdr = plan.network.kind === "nics" && plan.network.nics.some((n) => n.vnetHdr)
      ? k.probeVnetHdr(lib)
      : false;
    const ctx = lib.createCtx();
    const [fd, peer] = k.unixSocketPair();
    try {
      calls.push({
        call: "krun_init_log",
        args: [-1, level, 0, 0],
        result: `${notRun}: the vmm child calls it`,
      });
      calls.push({ call: "krun_create_ctx", args: [], result: ctx });
      try {
        const list = k.libkrunCalls(plan, {
          ctx,
          guest,
          channelFd: fd,
          consoleLog: k.statePaths(plan.stateDir).consoleLog,
          vnetHdr,
        });
        const applied = k.applyCalls(lib, list);
        calls.push(...applied.results);
        failed = applied.error;
      } catch (e) {
        if (!(e instanceof SpecValidationError)) throw e;
        for (const x of e.errors) err(formatSpecError(x));
        return EXIT_NERDBOX;
      }
      calls.push({ call: "krun_start_enter", args: [ctx], result: notRun });
      lib.freeCtx(ctx);
      calls.push({ call: "krun_free_ctx", args: [ctx], result: 0 });
    } finally {
      k.closeFd(fd);
      k.closeFd(peer);
    }
  }
  if (flags.json) {
    console.log(JSON.stringify(
      {
        backend: plan.backend,
        libkrun: loc,
        ...(loadError ? { libkrunError: loadError } : {}),
        plan,
        calls,
        ...(failed ? { error: failed.message } : {}),
      },
      null,
      2,
    ));
  } else {
    console.log(`backend: libkrun (${loc ?? "not found"})`);
    if (loadError) console.log(`libkrun did not load, calls not applied: ${loadError}`);
    for (const c of calls) {
      const args = c.args.map((a) => JSON.stringify(a)).join(", ");
      const res = typeof c.result === "number" ? `= ${c.result}` : `  # ${c.result}`;
      console.log(`${c.call}(${args}) ${res}`);
    }
  }
  if (failed) {
    err(failed.message);
    return EXIT_NERDBOX;
  }
  return 0;
}
