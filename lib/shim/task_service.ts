/**
 * The containerd Task service (`containerd.task.v2.Task`) over ttrpc, for every container of one
 * shim daemon. Create parses the bundle through the one spec parser and plans the VM; Start boots
 * it; Wait answers after every byte of output was copied; events go to containerd.
 */
import {
  create,
  type DescMessage,
  fromBinary,
  type MessageShape,
  toBinary,
} from "@bufbuild/protobuf";
import { EmptySchema, timestampFromDate } from "@bufbuild/protobuf/wkt";
import * as pb from "./proto/gen/containerd/shim_pb.ts";
import * as ev from "./proto/gen/containerd/events_pb.ts";
import { Status } from "./proto/gen/containerd/task_types_pb.ts";
import { OptionsSchema as RuntimeOptionsSchema } from "./proto/gen/runtimeoptions/options_pb.ts";
import { type CallContext, Code, TtrpcError, type TtrpcServer } from "./ttrpc.ts";
import type { EventPublisher } from "./events.ts";
import { Container, type ContainerEvents, Proc, type VmLauncher } from "./container.ts";
import { mountRootfs, unmountAll } from "./mounts.ts";
import { openProcessIo, type StdioPaths } from "./stdio.ts";
import { takeReservation } from "./rundir.ts";
import { parseBackend } from "../spec/backend.ts";
import { SpecValidationError } from "../spec/types.ts";
import type { BackendChoice } from "../spec/types.ts";
import type { Backend } from "../vm/types.ts";
import { VERSION } from "../version.ts";

/** The wire name of the service. */
export const TASK_SERVICE = "containerd.task.v2.Task";

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

/** Parses a runtime options file: JSON `{"backend": …}` or TOML-style `backend = "…"` lines. */
export function parseOptionsFile(text: string, path: string): { backend?: BackendChoice } {
  let backend: string | undefined;
  const trimmed = text.trim();
  if (trimmed.startsWith("{")) {
    const obj = JSON.parse(trimmed);
    if (obj.backend !== undefined) backend = String(obj.backend);
  } else {
    for (const line of text.split("\n")) {
      const m = line.replace(/#.*$/, "").match(/^\s*backend\s*=\s*"?([^"\s]*)"?\s*$/);
      if (m) backend = m[1];
    }
  }
  return backend === undefined ? {} : { backend: parseBackend(backend, `${path}: backend`) };
}

/** The backend a container gets when its annotations do not choose one. */
export async function defaultBackend(options: Uint8Array | undefined): Promise<BackendChoice> {
  let configPath = "";
  if (options && options.length > 0) {
    try {
      const any = fromBinary((await import("@bufbuild/protobuf/wkt")).AnySchema, options);
      if (any.typeUrl.endsWith("runtimeoptions.v1.Options")) {
        configPath = fromBinary(RuntimeOptionsSchema, any.value).configPath;
      }
    } catch { /* options of another runtime's type: not ours to read */ }
  }
  if (configPath) {
    let parsed;
    try {
      parsed = parseOptionsFile(await Deno.readTextFile(configPath), configPath);
    } catch (err) {
      if (err instanceof SpecValidationError) throw err;
      throw new TtrpcError(
        Code.INVALID_ARGUMENT,
        `runtime options file ${configPath}: ${err instanceof Error ? err.message : err}`,
      );
    }
    if (parsed.backend) return parsed.backend;
  }
  const env = Deno.env.get("NERDBOX_BACKEND");
  if (env) return parseBackend(env, "NERDBOX_BACKEND");
  return "auto";
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
      log: (level, msg, c) => this.#opts.log(level, msg, c.id),
    };
  }

  /** Number of containers created or being created. */
  get size(): number {
    return this.containers.size + this.#creating.size;
  }

  /** Registers every Task method on `server`. */
  register(server: TtrpcServer): void {
    const on = <I extends DescMessage, O extends DescMessage>(
      method: string,
      inSchema: I,
      outSchema: O,
      fn: (req: MessageShape<I>, ctx: CallContext) => Promise<MessageShape<O>>,
    ) => {
      server.register(TASK_SERVICE, method, async (payload, ctx) => {
        const req = fromBinary(inSchema, payload);
        const res = await fn(req, ctx);
        return toBinary(outSchema, res);
      });
    };
    const empty = create(EmptySchema);
    on("Create", pb.CreateTaskRequestSchema, pb.CreateTaskResponseSchema, (r) => this.create(r));
    on("Start", pb.StartRequestSchema, pb.StartResponseSchema, (r) => this.start(r));
    on("Wait", pb.WaitRequestSchema, pb.WaitResponseSchema, (r, ctx) => this.wait(r, ctx));
    on("Kill", pb.KillRequestSchema, EmptySchema, async (r) => (await this.kill(r), empty));
    on("Delete", pb.DeleteRequestSchema, pb.DeleteResponseSchema, (r) => this.delete(r));
    on("State", pb.StateRequestSchema, pb.StateResponseSchema, (r) => this.state(r));
    on("Pids", pb.PidsRequestSchema, pb.PidsResponseSchema, (r) => this.pids(r));
    on("Connect", pb.ConnectRequestSchema, pb.ConnectResponseSchema, (r) => this.connect(r));
    on("Shutdown", pb.ShutdownRequestSchema, EmptySchema, (r) => {
      this.shutdown(r);
      return Promise.resolve(empty);
    });
    on("CloseIO", pb.CloseIORequestSchema, EmptySchema, (r) => {
      this.closeIO(r);
      return Promise.resolve(empty);
    });
    on("ResizePty", pb.ResizePtyRequestSchema, EmptySchema, async (r) => {
      await this.resizePty(r);
      return empty;
    });
    on("Exec", pb.ExecProcessRequestSchema, EmptySchema, async (r) => {
      await this.exec(r);
      return empty;
    });
    const unimplemented = (method: string, why: string) =>
      server.register(TASK_SERVICE, method, () => {
        throw new TtrpcError(Code.UNIMPLEMENTED, `${method}: ${why}`);
      });
    unimplemented("Pause", "nerdbox cannot pause a microVM's workload");
    unimplemented("Resume", "nerdbox cannot pause a microVM's workload");
    unimplemented("Checkpoint", "nerdbox does not checkpoint microVMs");
    unimplemented("Update", "nerdbox cannot resize a running microVM");
    unimplemented("Stats", "nerdbox reports no cgroup metrics for microVMs");
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

  /** Create: mount, parse, plan, open stdio; the VM starts at Start. */
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
    const rootfs = `${bundle}/rootfs`;
    let mounted = false;
    let io;
    try {
      const mounts = req.rootfs.map((m) => ({
        type: m.type,
        source: m.source,
        options: m.options,
      }));
      if (mounts.length > 0) {
        await mountRootfs(mounts, rootfs);
        mounted = true;
      }
      // The parser and planner load with the first Create, so that a new daemon listens sooner.
      const [{ readOciBundle }, { buildSandboxSpec }, { KEY_BACKEND }, { planVm }] = await Promise
        .all([
          import("../spec/oci.ts"),
          import("../spec/sandbox.ts"),
          import("../spec/annotations.ts"),
          import("../vm/plan.ts"),
        ]);
      const oci = await readOciBundle(bundle);
      const terminal = req.terminal || oci.process.terminal;
      const backendGiven = oci.annotations[KEY_BACKEND] !== undefined;
      const fallback = backendGiven ? undefined : await defaultBackend(
        req.options && req.options.value.length > 0
          ? toBinary((await import("@bufbuild/protobuf/wkt")).AnySchema, req.options)
          : reserved,
      );
      const { spec, warnings } = buildSandboxSpec({
        id,
        rootfs: oci.rootfs,
        process: { ...oci.process, terminal },
        hostname: oci.hostname,
        annotations: oci.annotations,
        ...(fallback ? { backend: fallback } : {}),
        ...(oci.netnsPath ? { netns: oci.netnsPath } : {}),
      });
      for (const w of warnings) this.#opts.log("warn", w, id);
      const backend = await this.#opts.resolveBackend(spec.backend);
      const plan = planVm(spec, {
        backend,
        stateDir: `${this.#opts.runDir}/${++this.#seq}`,
      });
      // The VM is the pod (lib/shim/pod_member.ts): the sandbox's VM applies specs with crun,
      // the pod's later containers are created inside it.
      const pod = await import("./pod_member.ts");
      if (pod.isPodSandbox(oci.annotations)) plan.oci = oci.raw as Record<string, unknown>;
      // Host bind mounts reach the VM through its volume share (lib/shim/volumes.ts).
      await (await import("./volumes.ts")).planVolumes(
        plan,
        oci.raw as Record<string, unknown>,
        id,
        pod.isPodSandbox(oci.annotations),
        (msg) => this.#opts.log("warn", msg, id),
      );
      const sandboxId = pod.podSandboxOf(oci.annotations);
      const stdio: StdioPaths = {
        stdin: req.stdin,
        stdout: req.stdout,
        stderr: req.stderr,
        terminal,
      };
      io = await openProcessIo(stdio);
      const c = new Container({
        id,
        bundle,
        plan,
        stdio,
        io,
        rootfsMounted: mounted,
        launch: (p, s) => {
          const sandbox = sandboxId ? this.containers.get(sandboxId) : undefined;
          if (sandbox?.vm && sandbox.plan.oci && sandbox.init.state === "running") {
            return pod.startInPod(sandbox.vm, id, oci.raw as Record<string, unknown>, rootfs, s);
          }
          return this.#opts.launcher().then((l) => l(p, s));
        },
        events: this.#events,
      });
      this.containers.set(id, c);
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
      await io?.close().catch(() => {});
      if (mounted) await unmountAll(rootfs).catch(() => {});
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

  /** Pids: the VMM (the container's init as the host sees it) and exec'd processes. */
  pids(req: pb.PidsRequest): Promise<pb.PidsResponse> {
    const c = this.#get(req.id);
    const processes = [c.init, ...c.execs.values()]
      .filter((p) => p.pid > 0 && p.state === "running")
      .map((p) => ({ pid: p.pid }));
    return Promise.resolve(create(pb.PidsResponseSchema, { processes }));
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
    let process;
    try {
      const { parseOciConfig } = await import("../spec/oci.ts");
      const json = JSON.parse(new TextDecoder().decode(req.spec?.value ?? new Uint8Array()));
      process = parseOciConfig({ root: { path: "rootfs" }, process: json }, c.bundle).process;
    } catch (err) {
      const msg = err instanceof Error ? err.message : String(err);
      throw new TtrpcError(Code.INVALID_ARGUMENT, `exec ${JSON.stringify(req.execId)}: ${msg}`);
    }
    const stdio: StdioPaths = {
      stdin: req.stdin,
      stdout: req.stdout,
      stderr: req.stderr,
      terminal: req.terminal,
    };
    const p = new Proc(req.execId, stdio);
    p.process = { ...process, terminal: req.terminal };
    p.io = await openProcessIo(stdio);
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
