/** The shim's Task service in this process (no daemon, no containerd), for tests and benches. */
import { TaskService } from "../../lib/shim/task_service.ts";
import { EventPublisher } from "../../lib/shim/events.ts";
import { startVm } from "../../lib/vm/launch.ts";

/**
 * A Task service for `namespace` keeping its state under `runDir`, events and log dropped, QEMU as
 * the backend. With `launchVms` false any VM start is refused (`<namespace>: no VM may start`).
 */
export function localTaskService(
  namespace: string,
  runDir: string,
  launchVms = false,
): TaskService {
  return new TaskService({
    namespace,
    runDir,
    events: new EventPublisher("", namespace, () => {}),
    log: () => {},
    launcher: launchVms
      ? () => Promise.resolve(startVm)
      : () => Promise.reject(new Error(`${namespace}: no VM may start`)),
    resolveBackend: () => Promise.resolve("qemu"),
    onShutdown: () => {},
  });
}

/**
 * A temp dir (mode 0711) with a `run` dir (0711) for localTaskService: the VM's private passt runs
 * as nobody, so the run dir must be searchable (as the daemon's is).
 */
export async function taskServiceDir(prefix: string): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix });
  await Deno.chmod(dir, 0o711);
  await Deno.mkdir(`${dir}/run`, { mode: 0o711 });
  await Deno.chmod(`${dir}/run`, 0o711);
  return dir;
}
