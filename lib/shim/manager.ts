/**
 * The shim's two short-lived commands, `start` and `delete`, as containerd runs them. Both stay
 * light: only small modules are imported up front; the ttrpc client is loaded by `delete` only when
 * a daemon is still alive. `start` re-uses the group's running daemon or spawns one detached from
 * its own stdio, writes `<bundle>/address` and prints the address — and nothing else — on stdout.
 */
import { bundleAnnotations, groupOf, socketPath } from "./address.ts";
import { SUN_PATH_MAX } from "../spec/socket_path.ts";
import type { ShimFlags } from "./flags.ts";
import { unmountAll } from "./mounts.ts";
import {
  lockSockets,
  reserve,
  runDirFor,
  socketAlive,
  takeReservation,
  unlockSockets,
} from "./rundir.ts";
import { processStartTime } from "../proc.ts";

/** File in the bundle where the daemon records the VMM it started (for `delete` after a crash). */
export const VMM_FILE = "nerdbox-vmm.json";
/** How long `start` waits for a new daemon to accept connections. */
const DAEMON_READY_MS = 30_000;

/** The argv that runs this program again (compiled binary, or deno + main.ts from a checkout). */
export function selfCommand(): { bin: string; args: string[] } {
  if (Deno.build.standalone) return { bin: Deno.execPath(), args: [] };
  const main = new URL("../../main.ts", import.meta.url).pathname;
  return { bin: Deno.execPath(), args: ["run", "-A", "--no-prompt", "--quiet", main] };
}

async function readStdinOptions(): Promise<Uint8Array> {
  if (Deno.stdin.isTerminal()) return new Uint8Array(0);
  try {
    return new Uint8Array(await new Response(Deno.stdin.readable).arrayBuffer());
  } catch {
    return new Uint8Array(0);
  }
}

async function writeAtomic(path: string, text: string): Promise<void> {
  const tmp = `${path}.tmp-${Deno.pid}`;
  await Deno.writeTextFile(tmp, text, { mode: 0o600 });
  await Deno.rename(tmp, path);
}

function require(flags: ShimFlags, names: Array<"namespace" | "id" | "address">): void {
  for (const n of names) {
    if (!flags[n]) throw new Error(`missing required flag -${n}`);
  }
}

async function spawnDaemon(flags: ShimFlags, socket: string, runDir: string): Promise<void> {
  const self = selfCommand();
  const args = [
    ...self.args,
    "shim",
    "-namespace",
    flags.namespace,
    "-address",
    flags.address,
    "-publish-binary",
    flags.publishBinary,
    "-id",
    flags.id,
    ...(flags.debug ? ["-debug"] : []),
    "serve",
    socket,
    runDir,
  ];
  const child = new Deno.Command(self.bin, {
    args,
    cwd: "/",
    env: { NERDBOX_INVOKED_AS: "nerdbox" },
    stdin: "null",
    stdout: "null",
    stderr: "null",
    detached: true,
  }).spawn();
  child.unref();
  let exited: Deno.CommandStatus | undefined;
  child.status.then((s) => exited = s);
  const deadline = Date.now() + DAEMON_READY_MS;
  while (Date.now() < deadline) {
    if (await socketAlive(socket)) return;
    if (exited) {
      throw new Error(
        `shim daemon exited with status ${exited.code} before listening on ${socket}`,
      );
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  try {
    child.kill("SIGKILL");
  } catch { /* gone */ }
  throw new Error(`shim daemon did not listen on ${socket} within ${DAEMON_READY_MS / 1000}s`);
}

/** `start`: returns the address containerd should connect to (already printed by the caller). */
export async function start(flags: ShimFlags): Promise<string> {
  require(flags, ["namespace", "id", "address"]);
  const bundle = Deno.cwd();
  const options = await readStdinOptions();
  const group = groupOf(await bundleAnnotations(bundle));
  const socket = await socketPath(flags.address, flags.namespace, group);
  if (socket.length > SUN_PATH_MAX) {
    throw new Error(`socket path ${socket} longer than ${SUN_PATH_MAX} bytes`);
  }
  const runDir = runDirFor(socket);
  const lock = await lockSockets();
  try {
    if (!(await socketAlive(socket))) {
      await Deno.remove(socket).catch(() => {});
      await Deno.remove(runDir, { recursive: true }).catch(() => {});
      await reserve(runDir, flags.id, options);
      await spawnDaemon(flags, socket, runDir);
    } else {
      await reserve(runDir, flags.id, options);
    }
  } finally {
    await unlockSockets(lock);
  }
  const address = `unix://${socket}`;
  await writeAtomic(`${bundle}/address`, address);
  return address;
}

/** What `delete` found and did, as the DeleteResponse reports it. */
export interface DeleteResult {
  pid: number;
  exitStatus: number;
  exitedAt: Date;
}

interface VmmRecord {
  pid: number;
  startTime: string;
}

async function killLeftoverVmm(bundle: string): Promise<number> {
  let rec: VmmRecord;
  try {
    rec = JSON.parse(await Deno.readTextFile(`${bundle}/${VMM_FILE}`));
  } catch {
    return 0;
  }
  if (typeof rec.pid !== "number" || rec.pid <= 1) return 0;
  if ((await processStartTime(rec.pid)) === rec.startTime) {
    try {
      Deno.kill(-rec.pid, "SIGKILL"); // its process group (the VMM leads one)
    } catch {
      try {
        Deno.kill(rec.pid, "SIGKILL");
      } catch { /* gone */ }
    }
  }
  await Deno.remove(`${bundle}/${VMM_FILE}`).catch(() => {});
  return rec.pid;
}

async function deleteThroughDaemon(socket: string, id: string): Promise<void> {
  const { deleteViaDaemon } = await import("./delete_client.ts");
  await deleteViaDaemon(socket, id);
}

/** `delete`: removes whatever is left of container `-id` in `-bundle`. Idempotent. */
export async function deleteCommand(flags: ShimFlags): Promise<DeleteResult> {
  const bundle = flags.bundle || Deno.cwd();
  let socket = "";
  try {
    socket = (await Deno.readTextFile(`${bundle}/address`)).trim().replace(/^unix:\/\//, "");
  } catch { /* never started */ }
  const alive = socket !== "" && await socketAlive(socket);
  if (alive) {
    await deleteThroughDaemon(socket, flags.id).catch(() => {});
  }
  const pid = await killLeftoverVmm(bundle);
  // A dead daemon's runs (their owner.json names it): kill what it started that still runs —
  // notably a passt QEMU never connected to, which would otherwise wait forever — before the run
  // dir goes away with the records.
  if (socket) {
    const { sweepDeadRuns } = await import("../vm/run_state.ts");
    await sweepDeadRuns(runDirFor(socket)).catch(() => {});
  }
  if (socket) await takeReservation(runDirFor(socket), flags.id);
  await unmountAll(`${bundle}/rootfs`);
  if (socket && !alive) {
    const lock = await lockSockets();
    try {
      if (!(await socketAlive(socket))) {
        await Deno.remove(socket).catch(() => {});
        await Deno.remove(runDirFor(socket), { recursive: true }).catch(() => {});
      }
    } finally {
      await unlockSockets(lock);
    }
  }
  return { pid, exitStatus: 137, exitedAt: new Date() };
}

/** Encodes a DeleteResponse (pid=1, exit_status=2, exited_at=3) with protobuf's wire writer. */
export async function encodeDeleteResponse(r: DeleteResult): Promise<Uint8Array> {
  const ms = r.exitedAt.getTime();
  const seconds = Math.floor(ms / 1000);
  return await encodeDeleteResponseParts(r.pid, r.exitStatus, seconds, (ms - seconds * 1000) * 1e6);
}

/** DeleteResponse bytes from its parts (exited_at as Timestamp seconds and nanos). */
export async function encodeDeleteResponseParts(
  pid: number,
  exitStatus: number,
  seconds: number,
  nanos: number,
): Promise<Uint8Array> {
  const { BinaryWriter, WireType } = await import("@bufbuild/protobuf/wire");
  const w = new BinaryWriter();
  if (pid) w.tag(1, WireType.Varint).uint32(pid);
  if (exitStatus) w.tag(2, WireType.Varint).uint32(exitStatus);
  w.tag(3, WireType.LengthDelimited).fork();
  if (seconds) w.tag(1, WireType.Varint).int64(seconds);
  if (nanos) w.tag(2, WireType.Varint).int32(nanos);
  w.join();
  return w.finish();
}
