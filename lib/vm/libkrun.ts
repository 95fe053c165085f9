/**
 * The libkrun backend: starts a VM in its own `nerdbox vmm` child process (krun_start_enter ends
 * the process that calls it; the call list is lib/vm/libkrun_calls.ts, the request
 * lib/vm/vmm_request.ts) and returns a VmHandle over the guest control channel; plus the raw-fd
 * socket helpers the child needs.
 */
import { earlyKillExit, endsBootingVm } from "./early_kill.ts";
import type { ExecTarget, GuestCgroupStats } from "../guest_protocol.ts";
import type { ResourcesUpdate } from "../linux_resources.ts";
import { GuestChannel } from "./channel.ts";
import { channelHandleOps } from "./channel_handle.ts";
import { buildGuestConfig } from "./guest_config.ts";
import { kvmStatus } from "./plan.ts";
import { layersGuestRootfs } from "./erofs_layers.ts";
import { locateLibkrun } from "./libkrun_locate.ts";
import { spawnInNetns } from "../net/netns.ts";
import type { ProcessSpec } from "../spec/types.ts";
import type { VmExit, VmHandle, VmPlan, VmProcess, VmStdio } from "./types.ts";
import { type GuestExec, ROOTFS_TAG } from "./libkrun_calls.ts";
import { bootTimeoutOverride } from "./boot_timeout.ts";
import { VMM_REQUEST_VERSION, type VmmRequest } from "./vmm_request.ts";
import { SUN_PATH_MAX } from "../spec/socket_path.ts";
import { errnoText, libc } from "../../ffi/libc.ts";
import { makeShareDir, namespaceBinder, VOLUMES_TAG } from "./volumes.ts";
import type { VolumeShareHandle } from "./types.ts";

/** How long the guest init may take to say HELLO after the VMM starts (ms). */
export const BOOT_TIMEOUT_MS = 60_000;

function bootTimeoutMs(): number {
  return bootTimeoutOverride() ?? BOOT_TIMEOUT_MS;
}

/** Env var that makes `nerdbox vmm` stop right before krun_start_enter (benchmarks). */
export const STOP_BEFORE_START_ENV = "NERDBOX_VMM_STOP_BEFORE_START";

// ---- unix sockets as raw fds (libkrun takes fds; Deno does not expose them) ----

/** libc, shared with the rest of the program (ffi/libc.ts). */
const c = libc;

const AF_UNIX = 1;
const SOCK_STREAM = 1;
const SOCK_CLOEXEC = 0o2000000;

/** Connects a unix stream socket to `path` and returns its raw fd (close with closeFd). */
export function connectUnixFd(path: string): number {
  const bytes = new TextEncoder().encode(path);
  if (bytes.length > SUN_PATH_MAX || bytes.includes(0)) {
    throw new Error(
      `socket path ${JSON.stringify(path)} must be 1-${SUN_PATH_MAX} bytes without NUL`,
    );
  }
  const addr = new Uint8Array(110);
  new DataView(addr.buffer).setUint16(0, AF_UNIX, true);
  addr.set(bytes, 2);
  const fd = c().socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw new Error(`socket(AF_UNIX): ${errnoText()}`);
  if (c().connect(fd, addr, 2 + bytes.length + 1) !== 0) {
    const why = errnoText();
    c().close(fd);
    throw new Error(`connect(${path}): ${why}`);
  }
  return fd;
}

/** A connected pair of unix stream socket fds (dry runs: a channel fd that goes nowhere). */
export function unixSocketPair(): [number, number] {
  const fds = new Int32Array(2);
  if (c().socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, new Uint8Array(fds.buffer)) !== 0) {
    throw new Error(`socketpair(AF_UNIX): ${errnoText()}`);
  }
  return [fds[0], fds[1]];
}

/** Closes a raw fd. */
export function closeFd(fd: number): void {
  c().close(fd);
}

const PR_SET_PDEATHSIG = 1;
const SIGKILL = 9;

/**
 * Makes the kernel kill this process when its parent dies (PR_SET_PDEATHSIG), so a VMM never
 * outlives the nerdbox that started it. Returns false when the parent is already gone.
 */
export function dieWithParent(parentPid: number): boolean {
  if (c().prctl(PR_SET_PDEATHSIG, BigInt(SIGKILL), 0n, 0n, 0n) !== 0) {
    throw new Error(`prctl(PR_SET_PDEATHSIG): ${errnoText()}`);
  }
  return c().getppid() === parentPid;
}

// ---- the guest image as libkrun sees it ----

/** The guest program for a guest image root (layout from lib/vm/guest_image.ts). */
export async function guestExec(rootDir: string): Promise<GuestExec> {
  const gi = await import("./guest_image.ts");
  return {
    rootDir,
    path: gi.GUEST_DENO,
    args: gi.guestInitArgs(),
    env: [
      ...Object.entries(gi.guestInitEnv()).map(([k, v]) => `${k}=${v}`),
      "NERDBOX_BACKEND=libkrun",
    ],
  };
}

/** Builds (or reuses) the guest image and returns what libkrun runs from it. */
export async function ensureGuestExec(): Promise<GuestExec> {
  let rootDir: string;
  try {
    const gi = await import("./guest_image.ts");
    rootDir = (await gi.ensureGuestImage()).rootDir;
  } catch (e) {
    throw new Error(`cannot prepare the guest image for libkrun: ${(e as Error).message}`);
  }
  return await guestExec(rootDir);
}

// ---- the vmm child ----

/** The file names inside plan.stateDir. */
export function statePaths(stateDir: string) {
  return {
    channel: `${stateDir}/ctl.sock`,
    request: `${stateDir}/vmm.json`,
    consoleLog: `${stateDir}/console.log`,
  };
}

/** argv that runs `nerdbox vmm` with this same program (from source or compiled). */
export function vmmCommand(requestPath: string): { cmd: string; args: string[] } {
  const exe = Deno.execPath();
  const self = exe.split("/").pop() === "deno"
    ? ["run", "-A", "--no-prompt", "--quiet", new URL("../../main.ts", import.meta.url).pathname]
    : [];
  return { cmd: exe, args: [...self, "vmm", requestPath] };
}

/** util-linux's unshare: the VMM gets a mount namespace of its own when the VM has volumes. */
export const UNSHARE = "/usr/bin/unshare";

/**
 * `cmd args` run in a new mount namespace that receives the host's later mounts (slave): the
 * volume share's binds are made there only (lib/vm/volumes.ts) and vanish with the VMM.
 */
export function inOwnMountNamespace(c: { cmd: string; args: string[] }) {
  return { cmd: UNSHARE, args: ["--mount", "--propagation", "slave", "--", c.cmd, ...c.args] };
}

/** Resolves once process `pid` runs in a mount namespace other than this process's. */
async function ownMountNamespace(pid: number, status: Promise<unknown>): Promise<void> {
  let ended = false;
  status.then(() => (ended = true), () => (ended = true));
  const self = await Deno.readLink("/proc/self/ns/mnt");
  for (let i = 0; i < 500 && !ended; i++) {
    const ns = await Deno.readLink(`/proc/${pid}/ns/mnt`).catch(() => self);
    if (ns !== self) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`the VMM (pid ${pid}) did not enter a mount namespace of its own`);
}

/** Last bytes of a child's output, kept for the failure message. */
class Tail {
  #buf = "";
  constructor(readonly max = 64 * 1024) {}
  push(s: string) {
    this.#buf = (this.#buf + s).slice(-this.max);
  }
  get text(): string {
    return this.#buf;
  }
}

const SIGNAL_NAMES: Record<number, Deno.Signal> = {
  1: "SIGHUP",
  2: "SIGINT",
  3: "SIGQUIT",
  9: "SIGKILL",
  10: "SIGUSR1",
  12: "SIGUSR2",
  15: "SIGTERM",
};

/**
 * The reason (one paragraph) a VMM child ended without the workload reporting its exit: the
 * nerdbox vmm's own error, KVM that is missing or cannot run guests, or the raw status.
 */
export function classifyVmmFailure(
  status: { code: number; signal: Deno.Signal | null },
  output: string,
  kvm = kvmStatus(),
): string {
  const own = output.split("\n").filter((l) => l.startsWith("nerdbox vmm: ")).map((l) =>
    l.slice(13)
  );
  if (own.length > 0) return own.join("\n");
  const how = status.signal
    ? `was killed by ${status.signal}`
    : `exited with status ${status.code}`;
  if (
    /Error creating the Kvm object|Kvm object|\/dev\/kvm/i.test(output) ||
    (!kvm.usable && !kvm.reason.includes("kvm_pvm") &&
      (status.code === 134 || status.signal === "SIGABRT"))
  ) {
    const detail = output.match(/Error creating the Kvm object[^\n]*/)?.[0];
    return `libkrun cannot run a VM on this host: ${kvm.reason}` +
      `${detail ? ` (krun_start_enter: "${detail}")` : ""}; the VMM ${how}. ` +
      `libkrun needs a working /dev/kvm: use --backend qemu (QEMU runs the guest without KVM, with TCG)`;
  }
  if (
    /KVM_EXIT_INTERNAL_ERROR/.test(output) || (kvm.reason.includes("kvm_pvm") && status.code === 1)
  ) {
    return `the guest kernel died during boot with KVM_EXIT_INTERNAL_ERROR (${kvm.reason}); ` +
      `the VMM ${how}. libkrun cannot run guests on this host: use --backend qemu`;
  }
  const lines = output.trim().split("\n").slice(-8).join("\n");
  return `the VMM ${how} before the workload reported an exit status` +
    (lines ? `; its last output:\n${lines}` : "");
}

async function tailFile(path: string, max = 2048): Promise<string> {
  try {
    const data = await Deno.readFile(path);
    return new TextDecoder().decode(data.subarray(Math.max(0, data.length - max))).trim();
  } catch {
    return "";
  }
}

/** Starts `plan` under libkrun in a `nerdbox vmm` child and returns its handle. */
export async function startLibkrunVm(plan: VmPlan, stdio: VmStdio): Promise<VmHandle> {
  const paths = statePaths(plan.stateDir);
  await Deno.mkdir(plan.stateDir, { recursive: true, mode: 0o700 });
  let listener: Deno.UnixListener | undefined;
  let child: Deno.ChildProcess | undefined;
  let volumes: VolumeShareHandle | undefined;
  try {
    // Fail before building anything when the library is not there.
    locateLibkrun(plan.libkrun?.path !== undefined ? { explicit: plan.libkrun.path } : {});
    const guest = await ensureGuestExec();
    listener = Deno.listen({ transport: "unix", path: paths.channel });
    const shareDir = plan.volumes ? await makeShareDir(plan.stateDir) : undefined;
    const req: VmmRequest = {
      version: VMM_REQUEST_VERSION,
      plan,
      guest,
      channelSocket: paths.channel,
      consoleLog: paths.consoleLog,
      ...(shareDir !== undefined ? { volumesDir: shareDir } : {}),
      parentPid: Deno.pid,
    };
    await Deno.writeTextFile(paths.request, JSON.stringify(req), { mode: 0o600 });
    const vmm = vmmCommand(paths.request);
    const { cmd, args } = shareDir ? inOwnMountNamespace(vmm) : vmm;
    const options: Deno.CommandOptions = {
      args,
      env: { NERDBOX_INVOKED_AS: "nerdbox" },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    };
    // The VMM (and every socket libkrun opens, TSI included) lives in the sandbox's netns.
    if (plan.netns !== undefined) {
      child = spawnInNetns(plan.netns, cmd, options);
    } else {
      child = new Deno.Command(cmd, options).spawn();
    }
    if (shareDir && plan.volumes) {
      // libkrun's virtio-fs server is in the VMM: the binds go into its namespace before boot.
      volumes = namespaceBinder(shareDir, child.pid, child.status, "the VMM");
      await ownMountNamespace(child.pid, child.status);
      await volumes.bind(plan.volumes.binds);
    }
  } catch (e) {
    if (child) {
      try {
        child.kill("SIGKILL");
      } catch { /* gone */ }
      await child.status.catch(() => {});
    }
    listener?.close();
    await Deno.remove(plan.stateDir, { recursive: true }).catch(() => {});
    throw e;
  }
  return new LibkrunVm(plan, stdio, child, listener, volumes);
}

class LibkrunVm implements VmHandle {
  readonly pid: number;
  readonly crun: boolean;
  readonly exited: Promise<VmExit>;
  #plan: VmPlan;
  #child: Deno.ChildProcess;
  #listener: Deno.UnixListener;
  #channel?: GuestChannel;
  /** Settles with the channel once the guest connected (undefined if it never did). */
  #channelReady = Promise.withResolvers<GuestChannel | undefined>();
  #status: Promise<Deno.CommandStatus>;
  #done = false;
  #disposed?: Promise<void>;
  /** A SIGKILL/SIGTERM that ended the VM before the workload started (lib/vm/early_kill.ts). */
  #killedEarly?: number;

  /** The VM's volume share (VmPlan.volumes): binds into the VMM's mount namespace. */
  readonly volumes?: VolumeShareHandle;

  constructor(
    plan: VmPlan,
    stdio: VmStdio,
    child: Deno.ChildProcess,
    listener: Deno.UnixListener,
    volumes?: VolumeShareHandle,
  ) {
    this.#plan = plan;
    if (volumes) this.volumes = volumes;
    this.crun = plan.oci !== undefined;
    this.#child = child;
    this.#listener = listener;
    this.pid = child.pid;
    this.#status = child.status;
    const tail = new Tail();
    const forward = plan.libkrun?.logLevel !== undefined;
    const copy = async (s: ReadableStream<Uint8Array>) => {
      const dec = new TextDecoder();
      for await (const chunk of s) {
        tail.push(dec.decode(chunk, { stream: true }));
        if (forward) await Deno.stderr.write(chunk);
      }
    };
    const outputs = Promise.all([copy(child.stdout), copy(child.stderr)]).catch(() => {});
    this.exited = this.#run(stdio, tail, outputs).finally(() => {
      this.#done = true;
      this.#channelReady.resolve(undefined); // no-op when the guest had connected
    });
  }

  async #run(stdio: VmStdio, tail: Tail, outputs: Promise<unknown>): Promise<VmExit> {
    const accept = this.#listener.accept();
    accept.catch(() => {}); // rejected when the listener closes first
    const accepted = await Promise.race([accept, this.#status.then(() => null)]);
    let exit: VmExit | undefined;
    let bootTimedOut = false;
    if (accepted) {
      const channel = new GuestChannel(accepted);
      this.#channel = channel;
      this.#channelReady.resolve(channel);
      const config = buildGuestConfig(
        this.#plan,
        this.#plan.layers
          ? layersGuestRootfs("libkrun", this.#plan.layers)
          : { kind: "virtiofs", tag: ROOTFS_TAG },
      );
      if (this.#plan.volumes) {
        config.volumes = { tag: VOLUMES_TAG, mounts: this.#plan.volumes.mounts };
      }
      // A guest that never comes up must not hang the caller.
      const boot = setTimeout(() => {
        if (channel.helloSeen) return;
        bootTimedOut = true;
        this.#kill("SIGKILL");
      }, bootTimeoutMs());
      const r = await channel.run(config, stdio);
      clearTimeout(boot);
      if (channel.guestEnded) exit = r;
      channel.close();
    } else {
      this.#channelReady.resolve(undefined);
      await stdio.stdout.close().catch(() => {});
      await stdio.stderr.close().catch(() => {});
    }
    // The VMM ends by itself once the guest is done; do not wait forever for it.
    const timer = setTimeout(() => this.#kill("SIGKILL"), exit ? 10_000 : 30_000);
    const status = await this.#status;
    clearTimeout(timer);
    await outputs;
    if (exit) return exit;
    if (this.#killedEarly !== undefined) return earlyKillExit(this.#killedEarly);
    let reason = bootTimedOut
      ? `the guest init did not come up within ${bootTimeoutMs() / 1000} s (the VM was killed)`
      : classifyVmmFailure(status, tail.text);
    const guestConsole = await tailFile(statePaths(this.#plan.stateDir).consoleLog);
    if (guestConsole) reason += `\nguest console (last lines):\n${guestConsole}`;
    return { code: 125, error: reason };
  }

  #kill(sig: Deno.Signal): void {
    try {
      this.#child.kill(sig);
    } catch {
      // already gone
    }
  }

  async signal(signo: number): Promise<void> {
    if (this.#done) return;
    if (this.#channel?.helloSeen && !this.#channel.guestEnded) {
      await this.#channel.sendSignal(signo);
      return;
    }
    // No workload yet: the signal ends the VM itself.
    if (endsBootingVm(signo)) this.#killedEarly ??= signo;
    this.#kill(SIGNAL_NAMES[signo] ?? "SIGKILL");
  }

  async resize(cols: number, rows: number): Promise<void> {
    if (this.#done || !this.#channel?.helloSeen) return;
    await this.#channel.sendResize(cols, rows);
  }

  /** Starts another process in the running guest over the channel (EXEC frame), in `target`. */
  exec(process: ProcessSpec, stdio: VmStdio, target?: ExecTarget): Promise<VmProcess> {
    return channelHandleOps(this.#channelReady.promise).exec(process, stdio, target);
  }

  /** The cgroup counters of a container in the guest (STATS frame; crun mode). */
  stats(container?: string): Promise<GuestCgroupStats> {
    return channelHandleOps(this.#channelReady.promise).stats(container);
  }

  /** The TCP ports the guest listens on (QUERY frame). */
  listening(): Promise<number[]> {
    return channelHandleOps(this.#channelReady.promise).listening();
  }

  /** Applies new resource limits to a container in the guest (QUERY frame; crun mode). */
  update(resources: ResourcesUpdate, container?: string): Promise<void> {
    return channelHandleOps(this.#channelReady.promise).update(resources, container);
  }

  /** The guest pids in a container's cgroup (QUERY frame; crun mode). */
  pids(container?: string): Promise<number[]> {
    return channelHandleOps(this.#channelReady.promise).pids(container);
  }

  dispose(): Promise<void> {
    this.#disposed ??= (async () => {
      if (!this.#done) this.#kill("SIGKILL");
      await this.#status.catch(() => {});
      await this.exited.catch(() => {});
      this.#channel?.close();
      try {
        this.#listener.close();
      } catch {
        // closed
      }
      const { removeTsiCgroup } = await import("./tsi_guard.ts");
      await removeTsiCgroup(this.#plan.stateDir);
      await Deno.remove(this.#plan.stateDir, { recursive: true }).catch(() => {});
    })();
    return this.#disposed;
  }
}
