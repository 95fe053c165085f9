/**
 * The QEMU backend's process handle: given a spawned QEMU and the channel listener, it accepts
 * the guest's one channel connection, runs the guest session (boot watchdog, shutdown grace),
 * turns failures into a VmExit with QEMU's stderr and the console tail, and answers signal /
 * exec / resize / dispose. Cleanup of everything the run made happens once, when it ends.
 */
import { earlyKillExit, endsBootingVm } from "./early_kill.ts";
import { GuestChannel } from "./channel.ts";
import { channelHandleOps } from "./channel_handle.ts";
import { killGroup } from "./qemu_accel.ts";
import type { GuestConfig, GuestNetworkReport } from "../guest_protocol.ts";
import type { VmExit, VmHandle, VmStdio, VolumeShareHandle } from "./types.ts";

/** How long QEMU may take to power off after the workload's exit was reported. */
const SHUTDOWN_GRACE_MS = 10_000;
/** How long QEMU may take to connect the channel. */
const CONNECT_TIMEOUT_MS = 30_000;

/** The last `lines` lines of a file ("" if unreadable). */
export async function fileTail(path: string, lines = 25): Promise<string> {
  const text = await Deno.readTextFile(path).catch(() => "");
  return text.split("\n").filter((l) => l.trim() !== "").slice(-lines).join("\n");
}

function streamTail(stream: ReadableStream<Uint8Array>, max = 4096): () => string {
  let buf = "";
  const dec = new TextDecoder();
  (async () => {
    for await (const c of stream) buf = (buf + dec.decode(c, { stream: true })).slice(-max);
  })().catch(() => {});
  return () => buf.trim();
}

async function acceptWithin(
  listener: Deno.Listener,
  died: Promise<unknown>,
  ms: number,
): Promise<Deno.Conn | undefined> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<undefined>((r) => {
    timer = setTimeout(() => r(undefined), ms);
  });
  try {
    return await Promise.race([listener.accept(), died.then(() => undefined), timeout]);
  } catch {
    return undefined;
  } finally {
    clearTimeout(timer);
  }
}

/** What qemuHandle needs. */
export interface QemuProcessInput {
  child: Deno.ChildProcess;
  /** The channel listener (closed once QEMU connected) and its socket path. */
  listener: Deno.Listener;
  channelSocket: string;
  consoleLog: string;
  /** The guest config sent over the channel (built once per run). */
  config: GuestConfig;
  stdio: VmStdio;
  /** Watchdog: QEMU start → workload started. */
  bootTimeoutMs: number;
  /** Runs every cleanup of the run, stopping QEMU first (idempotent). */
  cleanup: () => Promise<void>;
  /** Called as phases end (`connected`, `started`). */
  phase: (name: string) => void;
  onLog?: (line: string) => void;
  onNetwork?: (report: GuestNetworkReport) => void;
  /** The VM's volume share, when it has one (host bind mounts, lib/vm/volumes.ts). */
  volumes?: VolumeShareHandle;
}

/** The running QEMU's handle; `qemuDone` tells whether QEMU has exited. */
export function qemuHandle(p: QemuProcessInput): { handle: VmHandle; qemuDone: () => boolean } {
  const { child, listener, stdio, consoleLog } = p;
  const qemuStderr = streamTail(child.stderr);
  let qemuDone = false;
  const qemuStatus = child.status.then((s) => {
    qemuDone = true;
    return s;
  });
  const closeStdio = async () => {
    await stdio.stdout.close().catch(() => {});
    await stdio.stderr.close().catch(() => {});
  };
  const failure = async (why: string): Promise<VmExit> => {
    const tail = await fileTail(consoleLog);
    const err = qemuStderr();
    return {
      code: 125,
      error: `${why}${err ? `\nqemu: ${err}` : ""}${
        tail ? `\n--- console (${consoleLog}) ---\n${tail}` : ""
      }`,
    };
  };

  let resolveChannel!: (c: GuestChannel | undefined) => void;
  const channelReady = new Promise<GuestChannel | undefined>((r) => (resolveChannel = r));
  let started = false;
  /** A SIGKILL/SIGTERM that arrived before the workload started ended the VM (early_kill.ts). */
  let killedEarly: number | undefined;
  const exited = (async (): Promise<VmExit> => {
    const conn = await acceptWithin(listener, qemuStatus, CONNECT_TIMEOUT_MS);
    if (!conn) {
      resolveChannel(undefined);
      await closeStdio();
      if (!qemuDone) killGroup(child.pid);
      const s = await qemuStatus;
      return await failure(`QEMU exited (status ${s.code}) before connecting the channel`);
    }
    // One connection only: nobody else gets to talk on (or wait in the queue of) the channel.
    try {
      listener.close();
    } catch {
      // closed
    }
    await Deno.remove(p.channelSocket).catch(() => {});
    const channel = new GuestChannel(conn);
    resolveChannel(channel);
    p.phase("connected");
    let timedOut = false;
    const watchdog = setTimeout(() => {
      if (!started) {
        timedOut = true;
        killGroup(child.pid);
      }
    }, p.bootTimeoutMs);
    const result = await channel.run(p.config, stdio, {
      onLog: p.onLog,
      onNetwork: p.onNetwork,
      onStarted: () => {
        started = true;
        p.phase("started");
      },
    });
    clearTimeout(watchdog);
    // The guest powers off after reporting; give it a moment, then make sure.
    const grace = setTimeout(() => killGroup(child.pid), SHUTDOWN_GRACE_MS);
    const s = await qemuStatus;
    clearTimeout(grace);
    channel.close();
    if (timedOut) {
      return await failure(
        `the guest did not start the workload within ${p.bootTimeoutMs / 1000} s (killed)`,
      );
    }
    if (result.error !== undefined) {
      const f = await failure(`${result.error} (QEMU status ${s.code})`);
      return { code: result.code, error: f.error };
    }
    return result;
  })().catch(async (err) => {
    await closeStdio();
    return await failure(`qemu backend: ${(err as Error).message}`);
  }).then(async (r) => {
    await p.cleanup();
    return killedEarly !== undefined ? earlyKillExit(killedEarly) : r;
  });

  let disposed = false;
  const handle: VmHandle = {
    pid: child.pid,
    exited,
    async signal(signo: number) {
      if (!Number.isInteger(signo) || signo < 1 || signo > 64) {
        throw new Error(`signal ${signo}: expected a signal number 1-64`);
      }
      if (!started && endsBootingVm(signo)) {
        killedEarly ??= signo;
        if (!qemuDone) killGroup(child.pid);
        return;
      }
      const c = await channelReady;
      if (!c) throw new Error("the VM is not running");
      await c.sendSignal(signo);
    },
    // exec'd processes and terminal resizes go over the same channel (lib/vm/channel.ts).
    ...channelHandleOps(channelReady),
    ...(p.volumes ? { volumes: p.volumes } : {}),
    crun: p.config.oci !== undefined,
    async dispose() {
      if (disposed) return await exited.then(() => {});
      disposed = true;
      if (!qemuDone) killGroup(child.pid);
      await exited;
    },
  };
  return { handle, qemuDone: () => qemuDone };
}
