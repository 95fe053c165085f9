/**
 * The long-lived shim daemon (`shim … serve SOCKET RUNDIR`, spawned by `start`): one ttrpc server
 * for every container of its group, logs to each container's bundle `log` fifo, events to
 * containerd. It exits on Shutdown once it serves no container and no `start` has a reservation.
 */
import { SOCKET_DIR } from "./address.ts";
import { EventPublisher } from "./events.ts";
import type { ShimFlags } from "./flags.ts";
import { type Level, LogSink } from "./log.ts";
import {
  ensureRunDir,
  hasFreshReservations,
  lockSockets,
  RESERVATION_TTL_MS,
  unlockSockets,
} from "./rundir.ts";
import { TaskService } from "./task_service.ts";
import { TtrpcServer } from "./ttrpc.ts";
import type { BackendChoice } from "../spec/types.ts";
import type { Backend } from "../vm/types.ts";
import type { VmLauncher } from "./container.ts";

const IDLE_CHECK_MS = RESERVATION_TTL_MS / 2;

async function resolveBackendLight(choice: BackendChoice): Promise<Backend> {
  if (choice !== "auto") return choice;
  // Avoid loading libkrun into the daemon when KVM cannot run guests anyway.
  const { kvmStatus, resolveBackend } = await import("../vm/plan.ts");
  if (!kvmStatus().usable) return "qemu";
  return await resolveBackend(choice);
}

/** Runs the daemon until it decides to exit; returns the exit code. */
export async function serve(flags: ShimFlags): Promise<number> {
  const [socket, runDir] = flags.rest;
  if (!socket || !runDir) {
    console.error("usage: nerdbox shim -namespace NS -address ADDR serve SOCKET RUNDIR");
    return 2;
  }
  const minLevel: Level = flags.debug ? "debug" : "info";
  const sinks = new Map<string, LogSink>();
  const log = (level: Level, msg: string, id?: string) => {
    const sink = id ? sinks.get(id) : undefined;
    if (sink) sink.log(level, msg);
    else for (const s of sinks.values()) s.log(level, msg);
  };
  globalThis.addEventListener("unhandledrejection", (e) => {
    e.preventDefault();
    log("error", `internal error: ${e.reason?.stack ?? e.reason}`);
  });
  globalThis.addEventListener("error", (e) => {
    e.preventDefault();
    log("error", `internal error: ${e.error?.stack ?? e.message}`);
  });

  await Deno.mkdir(SOCKET_DIR, { recursive: true, mode: 0o711 });
  await ensureRunDir(runDir);
  await Deno.remove(socket).catch(() => {});
  const listener = Deno.listen({ transport: "unix", path: socket });
  await Deno.chmod(socket, 0o600);

  const events = new EventPublisher(
    Deno.env.get("TTRPC_ADDRESS") ?? "",
    flags.namespace,
    (m) => log("warn", m),
  );
  let launcher: VmLauncher | undefined;
  const server = new TtrpcServer();
  let exiting = false;
  const finished = Promise.withResolvers<number>();

  const exitIfIdle = async (): Promise<void> => {
    if (exiting || service.size > 0) return;
    const lock = await lockSockets();
    try {
      if (service.size > 0 || await hasFreshReservations(runDir)) return;
      exiting = true;
      listener.close();
      await Deno.remove(socket).catch(() => {});
      await Deno.remove(runDir, { recursive: true }).catch(() => {});
    } finally {
      await unlockSockets(lock);
    }
    await events.flush();
    events.close();
    for (const s of sinks.values()) await s.close();
    server.close();
    finished.resolve(0);
  };

  const service: TaskService = new TaskService({
    namespace: flags.namespace,
    runDir,
    events,
    log,
    launcher: async () => launcher ??= (await import("../vm/launch.ts")).startVm,
    resolveBackend: resolveBackendLight,
    onShutdown: () => setTimeout(() => exitIfIdle(), 50),
    openLog: async (id, bundle) => {
      sinks.set(
        id,
        await LogSink.open(`${bundle}/log`, minLevel, {
          namespace: flags.namespace,
          id,
          runtime: "io.containerd.nerdbox.v1",
        }),
      );
    },
    closeLog: async (id) => {
      const s = sinks.get(id);
      sinks.delete(id);
      await s?.close();
    },
  });
  service.register(server);
  server.onError = (err) => log("error", `ttrpc: ${err instanceof Error ? err.message : err}`);

  const idle = setInterval(() => exitIfIdle(), IDLE_CHECK_MS);
  const stopAll = async () => {
    for (const c of service.containers.values()) await c.dispose().catch(() => {});
    service.containers.clear();
    await exitIfIdle();
  };
  Deno.addSignalListener("SIGTERM", stopAll);
  Deno.addSignalListener("SIGINT", stopAll);

  server.serve(listener).catch((err) => log("error", `listener: ${err?.message ?? err}`));
  const code = await finished.promise;
  clearInterval(idle);
  Deno.removeSignalListener("SIGTERM", stopAll);
  Deno.removeSignalListener("SIGINT", stopAll);
  Deno.exit(code);
}
