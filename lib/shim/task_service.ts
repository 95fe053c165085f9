/**
 * The containerd Task service (`containerd.task.v2.Task`) over ttrpc, for every container of one
 * shim daemon. Create hands the bundle to newContainer (lib/shim/new_container.ts: mount, parse,
 * plan, open I/O); Start boots the VM; Wait answers after every byte of output was copied; events
 * go to containerd.
 */
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import * as pb from "./proto/gen/containerd/shim_pb.ts";
import * as ev from "./proto/gen/containerd/events_pb.ts";
import { Status } from "./proto/gen/containerd/task_types_pb.ts";
import { type CallContext, Code, TtrpcError, type TtrpcServer } from "./ttrpc.ts";
import type { EventPublisher } from "./events.ts";
import type { Container, ContainerEvents, Proc, VmLauncher } from "./container.ts";
import { takeReservation } from "./rundir.ts";
import { newContainer, newExecProcess } from "./new_container.ts";
import { registerTaskMethods } from "./task_methods.ts";
import { SpecValidationError } from "../spec/types.ts";
import type { BackendChoice } from "../spec/types.ts";
import type { Backend } from "../vm/types.ts";
import { VERSION } from "../version.ts";
import { taskPids, taskStats, updateTask } from "./task_queries.ts";

/** The wire name of the service. */
export { TASK_SERVICE } from "./task_methods.ts";

/** Where the service logs (per container when one is known). */
export interface ServiceLog {
  (level: "debug" | "info" | "warn" | "error", msg: string, containerId?: string): void;
}

/** What the daemon gives the service. */
export interface TaskServiceOptions {
  namespace: string;
  /** The daemon's private directory (reservations, VM state dirs). */
  runDir: string;
  events: EventPublisher;
  log: ServiceLog;
  /** Loads the VM launcher (lib/vm/launch.ts) on first use. */
  launcher: () => Promise<VmLauncher>;
  /** Resolves `auto` (lib/vm/plan.ts resolveBackend). */
  resolveBackend: (choice: BackendChoice) => Promise<Backend>;
  /** Called after a container was created or deleted. */
  onChange?: () => void;
  /** Called when containerd asks the daemon to shut down (Shutdown with no containers left). */
  onShutdown: () => void;
  /** Opens the container's log sink (bundle `log` fifo). */
  openLog?: (id: string, bundle: string) => Promise<void>;
  /** Closes it. */
  closeLog?: (id: string) => Promise<void>;
}

function ts(d: Date | undefined) {
  return d ? timestampFromDate(d) : undefined;
}

function notFound(what: string): TtrpcError {
  return new TtrpcError(Code.NOT_FOUND, `${what}: not found`);
}

/** All containers of one daemon and the ttrpc methods over them. */
export class TaskService {
  readonly containers = new Map<string, Container>();
  #creating = new Set<string>();
  #opts: TaskServiceOptions;
  #seq = 0;
  #events: ContainerEvents;

  /** Builds the service; call register() to expose it. */
  constructor(opts: TaskServiceOptions) {
    this.#opts = opts;
    this.#events = {
      started: (c, p) => this.#publishStart(c, p),
      exited: (c, p) => this.#publishExit(c, p),
      oom: (c) => this.#publishOom(c),
      log: (level, msg, c) => this.#opts.log(level, msg, c.id),
    };
  }

  /** Number of containers created or being created. */
  get size(): number {
    return this.containers.size + this.#creating.size;
  }

  /** Registers every Task method on `server` (lib/shim/task_methods.ts). */
  register(server: TtrpcServer): void {
    registerTaskMethods(server, this);
  }

  #get(id: string): Container {
    const c = this.containers.get(id);
    if (!c) throw notFound(`container ${JSON.stringify(id)}`);
    return c;
  }

  #proc(id: string, execId: string): [Container, Proc] {
    const c = this.#get(id);
    const p = c.proc(execId);
    if (!p) throw notFound(`process ${JSON.stringify(execId)} of container ${JSON.stringify(id)}`);
    return [c, p];
  }

  /** Create: checks the request, then newContainer (mount, parse, plan, open stdio); the VM starts at Start. */
  async create(req: pb.CreateTaskRequest): Promise<pb.CreateTaskResponse> {
    const { id, bundle } = req;
    if (!id) throw new TtrpcError(Code.INVALID_ARGUMENT, "id: expected a container id");
    if (!bundle.startsWith("/")) {
      throw new TtrpcError(
        Code.INVALID_ARGUMENT,
        `bundle ${JSON.stringify(bundle)}: expected an absolute path`,
      );
    }
    if (req.checkpoint) {
      throw new TtrpcError(Code.UNIMPLEMENTED, "Create: nerdbox does not restore checkpoints");
    }
    if (this.containers.has(id) || this.#creating.has(id)) {
      throw new TtrpcError(Code.ALREADY_EXISTS, `container ${JSON.stringify(id)}: already exists`);
    }
    this.#creating.add(id);
    const reserved = await takeReservation(this.#opts.runDir, id);
    await this.#opts.openLog?.(id, bundle);
    try {
      const { container, backend, terminal } = await newContainer(req, {
        stateDir: `${this.#opts.runDir}/${++this.#seq}`,
        reserved,
        resolveBackend: this.#opts.resolveBackend,
        launcher: this.#opts.launcher,
        lookup: (other) => this.containers.get(other),
        events: this.#events,
        warn: (w) => this.#opts.log("warn", w, id),
      });
      this.containers.set(id, container);
      this.#opts.log("info", `created (backend ${backend})`, id);
      this.#opts.events.publish(
        "/tasks/create",
        ev.TaskCreateSchema,
        create(ev.TaskCreateSchema, {
          containerId: id,
          bundle,
          rootfs: req.rootfs,
          io: { stdin: req.stdin, stdout: req.stdout, stderr: req.stderr, terminal },
          pid: 0,
        }),
      );
      return create(pb.CreateTaskResponseSchema, { pid: 0 });
    } catch (err) {
      await this.#opts.closeLog?.(id);
      if (err instanceof SpecValidationError) {
        this.#opts.log("error", `create refused: ${err.message}`, id);
        throw new TtrpcError(Code.INVALID_ARGUMENT, err.message);
      }
      if (err instanceof TtrpcError) throw err;
      const msg = err instanceof Error ? err.message : String(err);
      this.#opts.log("error", `create failed: ${msg}`, id);
      throw new TtrpcError(Code.UNKNOWN, msg);
    } finally {
      this.#creating.delete(id);
      this.#opts.onChange?.();
    }
  }

  /** Start: boots the VM (init) or starts an exec'd process. */
  async start(req: pb.StartRequest): Promise<pb.StartResponse> {
    const [c, p] = this.#proc(req.id, req.execId);
    if (p.state !== "created") {
      throw new TtrpcError(Code.FAILED_PRECONDITION, `process ${p.execId || req.id} is ${p.state}`);
    }
    try {
      const pid = req.execId !== "" ? await c.startExec(p) : await c.start();
      return create(pb.StartResponseSchema, { pid });
    } catch (err) {
      const msg = err instanceof Error ? err.message : String(err);
      this.#opts.log("error", msg, c.id);
      throw new TtrpcError(Code.UNKNOWN, msg);
    }
  }

  /** Wait: blocks until the process stopped and its output was copied. */
  async wait(req: pb.WaitRequest, ctx: CallContext): Promise<pb.WaitResponse> {
    const [, p] = this.#proc(req.id, req.execId);
    const aborted = new Promise<never>((_, reject) => {
      const fail = () => reject(new TtrpcError(Code.CANCELLED, "wait cancelled"));
      if (ctx.signal.aborted) fail();
      ctx.signal.addEventListener("abort", fail, { once: true });
    });
    aborted.catch(() => {});
    await Promise.race([p.exited, aborted]);
    return create(pb.WaitResponseSchema, { exitStatus: p.exitStatus, exitedAt: ts(p.exitedAt) });
  }

  /** Kill: the signal goes to the workload inside the VM. */
  async kill(req: pb.KillRequest): Promise<void> {
    const [c, p] = this.#proc(req.id, req.execId);
    const signo = req.signal;
    if (signo < 1 || signo > 64) {
      throw new TtrpcError(Code.INVALID_ARGUMENT, `signal ${signo}: expected 1-64`);
    }
    if (p.state === "stopped") throw notFound("process already finished");
    this.#opts.log("debug", `kill ${p.execId || "init"} with signal ${signo}`, c.id);
    if (p.state === "created" && p === c.init) return await c.killCreated(signo);
    try {
      if (p === c.init) await c.killInit(signo);
      else await p.kill(signo);
      if (req.all && p === c.init) {
        for (const e of c.execs.values()) await e.kill(signo).catch(() => {});
      }
    } catch (err) {
      throw new TtrpcError(
        Code.UNKNOWN,
        `kill ${signo}: ${err instanceof Error ? err.message : err}`,
      );
    }
  }

  /** Delete: releases a stopped (or never started) process, and for init the whole container. */
  async delete(req: pb.DeleteRequest): Promise<pb.DeleteResponse> {
    const [c, p] = this.#proc(req.id, req.execId);
    if (p.state === "running") {
      throw new TtrpcError(Code.FAILED_PRECONDITION, `cannot delete a running process`);
    }
    if (req.execId !== "") {
      c.execs.delete(req.execId);
      await p.io?.close();
    } else {
      try {
        await c.dispose();
      } catch (err) {
        this.#opts.log("warn", `cleanup: ${err instanceof Error ? err.message : err}`, c.id);
      }
      this.containers.delete(c.id);
      this.#opts.events.publish(
        "/tasks/delete",
        ev.TaskDeleteSchema,
        create(ev.TaskDeleteSchema, {
          containerId: c.id,
          pid: p.pid,
          exitStatus: p.exitStatus,
          exitedAt: ts(p.exitedAt ?? new Date()),
          id: c.id,
        }),
      );
      this.#opts.log("info", "deleted", c.id);
      await this.#opts.closeLog?.(c.id);
      this.#opts.onChange?.();
    }
    return create(pb.DeleteResponseSchema, {
      pid: p.pid,
      exitStatus: p.exitStatus,
      exitedAt: ts(p.exitedAt ?? new Date()),
    });
  }

  /** State of a process. */
  state(req: pb.StateRequest): Promise<pb.StateResponse> {
    const [c, p] = this.#proc(req.id, req.execId);
    const status = p.state === "created"
      ? Status.CREATED
      : p.state === "running"
      ? Status.RUNNING
      : Status.STOPPED;
    return Promise.resolve(create(pb.StateResponseSchema, {
      id: c.id,
      bundle: c.bundle,
      pid: p.pid,
      status,
      stdin: p.stdio.stdin,
      stdout: p.stdio.stdout,
      stderr: p.stdio.stderr,
      terminal: p.stdio.terminal,
      exitStatus: p.exitStatus,
      exitedAt: ts(p.exitedAt),
      execId: p.execId,
    }));
  }

  /** Stats: the container's cgroup v2 counters read in the guest (lib/shim/task_queries.ts). */
  stats(req: pb.StatsRequest): Promise<pb.StatsResponse> {
    return taskStats(this.#get(req.id));
  }

  /** Pids: guest pids in a crun container's cgroup, else the VMM and exec'd processes. */
  pids(req: pb.PidsRequest): Promise<pb.PidsResponse> {
    return taskPids(this.#get(req.id));
  }

  /** Update: new resource limits for a crun container's cgroup in the guest (crun update). */
  update(req: pb.UpdateTaskRequest): Promise<void> {
    return updateTask(this.#get(req.id), req);
  }

  /** Connect: the daemon's pid and the task's. */
  connect(req: pb.ConnectRequest): Promise<pb.ConnectResponse> {
    const c = this.#get(req.id);
    return Promise.resolve(create(pb.ConnectResponseSchema, {
      shimPid: Deno.pid,
      taskPid: c.init.pid,
      version: VERSION,
    }));
  }

  /** Shutdown: the daemon exits only when it serves no container. */
  shutdown(_req: pb.ShutdownRequest): void {
    if (this.size === 0) this.#opts.onShutdown();
  }

  /** CloseIO: ends the process's stdin. */
  closeIO(req: pb.CloseIORequest): void {
    const [, p] = this.#proc(req.id, req.execId);
    if (req.stdin) p.io?.closeStdin();
  }

  /** ResizePty: forwarded when the backend can resize the guest's terminal. */
  async resizePty(req: pb.ResizePtyRequest): Promise<void> {
    const [c, p] = this.#proc(req.id, req.execId);
    if (!p.stdio.terminal) return;
    if (p === c.init && c.vm?.resize) await c.vm.resize(req.width, req.height);
    else if (p !== c.init && p.resize && p.state === "running") {
      await p.resize(req.width, req.height);
    } else this.#opts.log("debug", `resize ${req.width}x${req.height} not forwarded`, c.id);
  }

  /** Exec: registers an extra process (OCI Process JSON in `spec`); Start runs it. */
  async exec(req: pb.ExecProcessRequest): Promise<void> {
    const c = this.#get(req.id);
    if (!req.execId) throw new TtrpcError(Code.INVALID_ARGUMENT, "exec_id: expected an id");
    if (c.execs.has(req.execId)) {
      throw new TtrpcError(
        Code.ALREADY_EXISTS,
        `exec ${JSON.stringify(req.execId)}: already exists`,
      );
    }
    if (c.init.state !== "running") {
      throw new TtrpcError(Code.FAILED_PRECONDITION, `container ${c.id} is ${c.init.state}`);
    }
    if (!c.vm?.exec) {
      throw new TtrpcError(
        Code.UNIMPLEMENTED,
        `exec ${JSON.stringify(req.execId)}: the ${c.plan.backend} backend does not offer exec ` +
          `into a running microVM yet`,
      );
    }
    const p = await newExecProcess(req, c.bundle);
    c.execs.set(req.execId, p);
    this.#opts.events.publish(
      "/tasks/exec-added",
      ev.TaskExecAddedSchema,
      create(ev.TaskExecAddedSchema, { containerId: c.id, execId: req.execId }),
    );
  }

  #publishStart(c: Container, p: Proc): void {
    if (p.execId === "") {
      this.#opts.events.publish(
        "/tasks/start",
        ev.TaskStartSchema,
        create(ev.TaskStartSchema, {
          containerId: c.id,
          pid: p.pid,
        }),
      );
    } else {
      this.#opts.events.publish(
        "/tasks/exec-started",
        ev.TaskExecStartedSchema,
        create(ev.TaskExecStartedSchema, { containerId: c.id, execId: p.execId, pid: p.pid }),
      );
    }
  }

  #publishOom(c: Container): void {
    this.#opts.log("warn", "the OOM killer ended the container's process", c.id);
    this.#opts.events.publish(
      "/tasks/oom",
      ev.TaskOOMSchema,
      create(ev.TaskOOMSchema, { containerId: c.id }),
    );
  }

  #publishExit(c: Container, p: Proc): void {
    this.#opts.log(
      "info",
      `${p.execId ? `exec ${p.execId}` : "init"} exited with ${p.exitStatus}`,
      c.id,
    );
    this.#opts.events.publish(
      "/tasks/exit",
      ev.TaskExitSchema,
      create(ev.TaskExitSchema, {
        containerId: c.id,
        id: p.execId || c.id,
        pid: p.pid,
        exitStatus: p.exitStatus,
        exitedAt: ts(p.exitedAt),
      }),
    );
  }
}
