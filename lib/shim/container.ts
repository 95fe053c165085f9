/**
 * One container served by the shim daemon: its rootfs mount, its parsed spec and VM plan, its
 * stdio, and the life of its init process (created → running → stopped), whose VM starts at Start.
 * Every failure path unmounts and closes what it opened; a VMM that dies ends the task with a
 * non-zero status instead of leaving Wait hanging.
 */
import type { ProcessSpec } from "../spec/types.ts";
import type { VmExit, VmHandle, VmPlan, VmStdio } from "../vm/types.ts";
import { VMM_FILE } from "./manager.ts";
import { processStartTime } from "../proc.ts";
import { unmountAll } from "./mounts.ts";
import { openProcessIo, type ProcessIo, type StdioPaths } from "./stdio.ts";

/** Starts a VM (lib/vm/launch.ts's startVm). */
export type VmLauncher = (plan: VmPlan, stdio: VmStdio) => Promise<VmHandle>;

/** Process state as containerd's Status enum has it. */
export type ProcState = "created" | "running" | "stopped";

/** How long after the VMM process vanished we wait for the backend to report the exit. */
const VANISHED_GRACE_MS = 10_000;
const WATCH_INTERVAL_MS = 1000;
/** How long a SIGKILLed workload may take to be reported gone before the VM is stopped. */
const SIGKILL_GRACE_MS = 10_000;

/** One process (init or exec) and its exit. */
export class Proc {
  readonly execId: string;
  readonly stdio: StdioPaths;
  /** What an exec'd process runs (undefined for init: the plan has it). */
  process?: ProcessSpec;
  state: ProcState = "created";
  pid = 0;
  exitStatus = 0;
  exitedAt?: Date;
  io?: ProcessIo;
  #exited = Promise.withResolvers<void>();
  #signal?: (signo: number) => Promise<void>;
  /** Resizes an exec'd process's terminal (set when the backend's process offers it). */
  resize?: (cols: number, rows: number) => Promise<void>;

  /** `execId` is "" for the init process. */
  constructor(execId: string, stdio: StdioPaths) {
    this.execId = execId;
    this.stdio = stdio;
  }

  /** Resolves once the process stopped and its output was copied. */
  get exited(): Promise<void> {
    return this.#exited.promise;
  }

  /** Marks the process running with `pid`, signalled through `signal`. */
  running(pid: number, signal: (signo: number) => Promise<void>): void {
    this.state = "running";
    this.pid = pid;
    this.#signal = signal;
  }

  /** Delivers a signal; false when the process is not running. */
  async kill(signo: number): Promise<boolean> {
    if (this.state !== "running" || !this.#signal) return false;
    await this.#signal(signo);
    return true;
  }

  /** Records the exit (first call wins), closes stdio after every byte, then releases waiters. */
  async finish(status: number, report?: string): Promise<boolean> {
    if (this.state === "stopped") return false;
    this.state = "stopped";
    this.exitStatus = status;
    this.exitedAt = new Date();
    if (this.io) {
      if (report) await this.io.report(report).catch(() => {});
      await this.io.close().catch(() => {});
    }
    this.#exited.resolve();
    return true;
  }
}

/** What the container reports to the task service when something happens. */
export interface ContainerEvents {
  started(c: Container, p: Proc): void;
  exited(c: Container, p: Proc): void;
  /** The OOM killer ended the container's init (reported before its exit). */
  oom(c: Container): void;
  log(level: "debug" | "info" | "warn" | "error", msg: string, c: Container): void;
}

/** A created container. */
export class Container {
  readonly id: string;
  readonly bundle: string;
  readonly plan: VmPlan;
  readonly init: Proc;
  readonly execs = new Map<string, Proc>();
  readonly rootfsMounted: boolean;
  vm?: VmHandle;
  #launch: VmLauncher;
  #events: ContainerEvents;
  #watch?: ReturnType<typeof setInterval>;
  #disposed = false;
  #onRunning?: (vm: VmHandle) => { stop(): void };
  #companion?: { stop(): void };

  /** Builds the container from what Create prepared (rootfs already mounted, stdio open). */
  constructor(args: {
    id: string;
    bundle: string;
    plan: VmPlan;
    stdio: StdioPaths;
    io: ProcessIo;
    rootfsMounted: boolean;
    launch: VmLauncher;
    events: ContainerEvents;
    /** Started once the VM runs, stopped when it ends (e.g. a pod's port-forward mirror). */
    onRunning?: (vm: VmHandle) => { stop(): void };
  }) {
    this.id = args.id;
    this.bundle = args.bundle;
    this.plan = args.plan;
    this.init = new Proc("", args.stdio);
    this.init.io = args.io;
    this.rootfsMounted = args.rootfsMounted;
    this.#launch = args.launch;
    this.#events = args.events;
    this.#onRunning = args.onRunning;
  }

  /** The process with `execId` ("" = init), or undefined. */
  proc(execId: string): Proc | undefined {
    return execId === "" ? this.init : this.execs.get(execId);
  }

  /** Boots the VM and releases the workload. On failure the task is stopped with status 125. */
  async start(): Promise<number> {
    const io = this.init.io!;
    let vm: VmHandle;
    try {
      vm = await this.#launch(this.plan, {
        ...(io.stdin ? { stdin: io.stdin } : {}),
        stdout: io.stdout,
        stderr: io.stderr,
        terminal: this.init.stdio.terminal,
        // e.g. the VM's private passt died: the task goes on, containerd's log says so.
        onWarning: (msg) => this.#events.log("warn", msg, this),
      });
    } catch (err) {
      const msg = err instanceof Error ? err.message : String(err);
      await this.init.finish(125);
      throw new Error(`starting the VM failed: ${msg}`);
    }
    this.vm = vm;
    this.init.running(vm.pid, (signo) => vm.signal(signo));
    this.#companion = this.#onRunning?.(vm);
    const startTime = await processStartTime(vm.pid);
    await Deno.writeTextFile(
      `${this.bundle}/${VMM_FILE}`,
      JSON.stringify({ pid: vm.pid, startTime: startTime ?? "" }),
    ).catch(() => {});
    this.#events.started(this, this.init);
    this.#watchVmm(vm);
    vm.exited.then(
      (exit) => this.#onExit(exit),
      (err) => this.#onExit({ code: 255, error: err instanceof Error ? err.message : String(err) }),
    );
    return vm.pid;
  }

  async #onExit(exit: VmExit): Promise<void> {
    clearInterval(this.#watch);
    this.#companion?.stop();
    let code = exit.code;
    if (exit.error && code === 0) code = 125;
    if (exit.error) this.#events.log("error", `VM ended with an error: ${exit.error}`, this);
    for (const p of this.execs.values()) {
      if (await p.finish(137)) this.#events.exited(this, p);
    }
    const report = exit.error ? `nerdbox: ${exit.error}\n` : undefined;
    if (exit.oomKilled && this.init.state !== "stopped") this.#events.oom(this);
    if (await this.init.finish(code, report)) this.#events.exited(this, this.init);
  }

  /** Never hang on a VMM that died without the backend noticing. */
  #watchVmm(vm: VmHandle): void {
    let goneSince = 0;
    this.#watch = setInterval(async () => {
      if (this.init.state === "stopped") return clearInterval(this.#watch);
      const alive = await Deno.stat(`/proc/${vm.pid}`).then(() => true, () => false);
      if (alive) return;
      goneSince ||= Date.now();
      if (Date.now() - goneSince >= VANISHED_GRACE_MS) {
        clearInterval(this.#watch);
        this.#onExit({ code: 255, error: `the VMM process ${vm.pid} exited without a status` });
      }
    }, WATCH_INTERVAL_MS);
  }

  /**
   * Signals the init workload inside the VM. SIGKILL is also a promise that the task ends: if the
   * guest has not reported the exit within a grace period (e.g. the signal raced the workload's
   * start), the VM is stopped and the task exits with 137.
   */
  async killInit(signo: number): Promise<void> {
    await this.init.kill(signo);
    if (signo !== 9) return;
    setTimeout(async () => {
      if (this.init.state !== "running") return;
      this.#events.log("warn", "SIGKILL did not end the workload: stopping the VM", this);
      if (await this.init.finish(137)) this.#events.exited(this, this.init);
      await this.vm?.dispose().catch(() => {});
    }, SIGKILL_GRACE_MS);
  }

  /** Starts exec'd process `p` in the running guest (the backend must offer VmHandle.exec). */
  async startExec(p: Proc): Promise<number> {
    const vm = this.vm;
    if (!vm?.exec || this.init.state !== "running") {
      throw new Error(`container ${this.id} is not running an exec-capable VM`);
    }
    const io = p.io!;
    let proc;
    try {
      proc = await vm.exec(p.process!, {
        ...(io.stdin ? { stdin: io.stdin } : {}),
        stdout: io.stdout,
        stderr: io.stderr,
        terminal: p.stdio.terminal,
      });
    } catch (err) {
      // The guest's status when it could not start the process (127 not found, 126 not runnable).
      const code = (err as { code?: unknown })?.code;
      await p.finish(
        typeof code === "number" && Number.isInteger(code) && code > 0 && code < 256 ? code : 126,
        `nerdbox: exec ${p.execId}: ${err instanceof Error ? err.message : err}\n`,
      );
      throw err;
    }
    p.running(proc.pid, (signo) => proc.signal(signo));
    if (proc.resize) p.resize = (cols, rows) => proc.resize!(cols, rows);
    this.#events.started(this, p);
    proc.exited.then(
      async (exit) => {
        const code = exit.error && exit.code === 0 ? 125 : exit.code;
        if (await p.finish(code, exit.error ? `nerdbox: ${exit.error}\n` : undefined)) {
          this.#events.exited(this, p);
        }
      },
      async () => {
        if (await p.finish(255)) this.#events.exited(this, p);
      },
    );
    return proc.pid;
  }

  /** Marks a never-started container as killed by `signo`. */
  async killCreated(signo: number): Promise<void> {
    if (await this.init.finish(128 + signo)) this.#events.exited(this, this.init);
  }

  /** Stops the VM if needed and releases everything (rootfs, stdio, state). Idempotent. */
  async dispose(): Promise<void> {
    if (this.#disposed) return;
    this.#disposed = true;
    clearInterval(this.#watch);
    this.#companion?.stop();
    const errors: string[] = [];
    if (this.vm) {
      await this.vm.dispose().catch((e) => errors.push(`VM: ${e?.message ?? e}`));
    }
    for (const p of [this.init, ...this.execs.values()]) await p.io?.close().catch(() => {});
    await Deno.remove(`${this.bundle}/${VMM_FILE}`).catch(() => {});
    await Deno.remove(this.plan.stateDir, { recursive: true }).catch(() => {});
    if (this.rootfsMounted) {
      await unmountAll(`${this.bundle}/rootfs`).catch((e) => errors.push(e.message));
    }
    if (errors.length) throw new Error(errors.join("; "));
  }
}

/** Opens stdio for a process (re-exported for the service). */
export { openProcessIo };
