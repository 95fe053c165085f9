/**
 * Host directories shared into a QEMU guest with virtio-fs: one `virtiofsd` (vhost-user daemon)
 * per shared directory, so nothing is copied per run and the guest's writes land in the directory
 * itself (as with runc, and as libkrun's built-in virtio-fs does). The guest side is guest/virtiofs.ts.
 *
 * API (also for the pods helper, to share bind mounts or further containers' rootfs):
 *  - `virtiofsAvailable()`       → why sharing cannot work here (undefined when it can)
 *  - `startVirtiofsd(share)`     → a running daemon bound to `share.socket` (waits for the socket)
 *  - `virtiofsQemuArgs(shares)`  → the QEMU argv pieces (memfd memory backend + one
 *                                  `vhost-user-fs-device` per share, virtio-mmio on microvm)
 *  - `VirtiofsShare.tag`         → what the guest mounts (`mount -t virtiofs <tag> <dir>`)
 * Lifecycle: the daemon exits by itself when QEMU disconnects (QEMU's exit, any cause); `stop()`
 * kills it and removes the socket; a run killed before QEMU connected is swept through the run
 * record (`onSpawn` → lib/vm/run_state.ts) or its `--socket-path=<stateDir>/ctl/` argument.
 */
import { helperCommandOptions, isSocket, streamTail, watchHelper } from "../helper_process.ts";

/** Debian's virtiofsd (qemu-system-common in bookworm ships the C daemon of QEMU 7.2). */
export const DEFAULT_VIRTIOFSD = "/usr/lib/qemu/virtiofsd";

/** The virtiofsd binary (NERDBOX_VIRTIOFSD overrides). */
export function virtiofsdBinary(): string {
  return Deno.env.get("NERDBOX_VIRTIOFSD") ?? DEFAULT_VIRTIOFSD;
}

/** One directory to share. */
export interface VirtiofsShareSpec {
  /** Tag the guest mounts it by (`[A-Za-z0-9_.-]`, ≤ 36 bytes: virtio-fs's limit). */
  tag: string;
  /** Host directory (absolute). */
  source: string;
  /** UNIX socket path for the vhost-user connection (in a dir only root can reach). */
  socket: string;
  /**
   * The guest mounts it read-only. Enforced by the guest only: QEMU 7.2's virtiofsd has no
   * read-only option, so a hostile guest kernel could still write (share only what it may write).
   */
  readOnly?: boolean;
  /** Called with the daemon's pid right after the spawn (record it for the dead-run sweep). */
  onSpawn?: (pid: number) => Promise<void> | void;
  /** How long to wait for the socket (default 10 s). */
  timeoutMs?: number;
  /**
   * Run the daemon in a mount namespace of its own (`unshare --mount --propagation slave`, which
   * execs it: the pid stays the daemon's): mounts attached there later (lib/vm/volumes.ts) are
   * served to the guest but never appear on the host, and vanish with the daemon.
   */
  privateMounts?: boolean;
}

/** util-linux's unshare (runs the daemon in a mount namespace of its own). */
export const UNSHARE = "/usr/bin/unshare";

/** A running virtiofsd. */
export interface VirtiofsShare {
  readonly tag: string;
  readonly socket: string;
  readonly pid: number;
  /** Resolves when the daemon ends. */
  readonly exited: Promise<Deno.CommandStatus>;
  /** Last lines of its stderr. */
  stderrTail(): string;
  /** Kills the daemon (SIGTERM, then SIGKILL) and removes its socket; idempotent. */
  stop(): Promise<void>;
}

const TAG_RE = /^[A-Za-z0-9_.-]{1,36}$/;

/**
 * Why virtio-fs cannot be used here, or undefined when it can: virtiofsd must exist and nerdbox
 * must be root (virtiofsd chroots into the directory and serves files with any owner).
 */
export function virtiofsAvailable(binary = virtiofsdBinary()): string | undefined {
  if (Deno.uid() !== 0) return "virtiofsd needs root (nerdbox runs as uid " + Deno.uid() + ")";
  try {
    const st = Deno.statSync(binary);
    if (!st.isFile || ((st.mode ?? 0) & 0o111) === 0) return `${binary} is not executable`;
  } catch {
    return `${binary} is missing (apt-get install qemu-system-common)`;
  }
  return undefined;
}

/** virtiofsd's argv (after the binary) for one share. */
export function virtiofsdArgs(share: Pick<VirtiofsShareSpec, "source" | "socket">): string[] {
  for (const [what, v] of [["source", share.source], ["socket", share.socket]] as const) {
    // deno-lint-ignore no-control-regex
    if (!v.startsWith("/") || /[\x00-\x1f\x7f,]/.test(v)) {
      throw new Error(
        `virtio-fs ${what} ${JSON.stringify(v)}: expected an absolute path without commas or ` +
          `control characters (virtiofsd's -o list cannot escape them)`,
      );
    }
  }
  const opts = [
    `source=${share.source}`,
    // chroot(2) into the directory: the pid nerdbox records is the daemon itself (the namespace
    // sandbox forks into new namespaces), and it works where namespaces cannot be created.
    "sandbox=chroot",
    "cache=auto",
    "xattr",
    "no_posix_lock",
    "no_flock",
    "log_level=err",
  ];
  return [`--socket-path=${share.socket}`, "-o", opts.join(","), "--rlimit-nofile=0"];
}

/** Starts virtiofsd for one share and waits for its socket; leaves nothing behind on failure. */
export async function startVirtiofsd(spec: VirtiofsShareSpec): Promise<VirtiofsShare> {
  if (!TAG_RE.test(spec.tag)) {
    throw new Error(`virtio-fs tag ${JSON.stringify(spec.tag)}: expected 1-36 of [A-Za-z0-9_.-]`);
  }
  const st = await Deno.stat(spec.source).catch(() => null);
  if (!st?.isDirectory) {
    throw new Error(`virtio-fs source ${JSON.stringify(spec.source)}: not a directory`);
  }
  const args = virtiofsdArgs(spec);
  await Deno.remove(spec.socket).catch(() => {});
  const binary = virtiofsdBinary();
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command(
      spec.privateMounts ? UNSHARE : binary,
      helperCommandOptions(
        spec.privateMounts ? ["--mount", "--propagation", "slave", "--", binary, ...args] : args,
      ),
    ).spawn();
  } catch (err) {
    throw new Error(
      `cannot run ${binary} (apt-get install qemu-system-common): ${(err as Error).message}`,
    );
  }
  const raw = streamTail(child.stderr);
  const stderrTail = () => raw().trim();
  const watch = watchHelper(child, 1000);
  const exited = watch.exited;
  const stop = async () => {
    await watch.stop();
    await Deno.remove(spec.socket).catch(() => {});
  };
  try {
    await spec.onSpawn?.(child.pid);
    const deadline = Date.now() + (spec.timeoutMs ?? 10_000);
    while (!(await isSocket(spec.socket))) {
      const done = watch.done();
      if (done || Date.now() > deadline) {
        const status = done ? `exited with ${(await exited).code}` : "created no socket in time";
        throw new Error(
          `virtiofsd for ${spec.source} (tag ${spec.tag}) ${status}: ${
            stderrTail() || "(no output)"
          }`,
        );
      }
      await new Promise((r) => setTimeout(r, 3));
    }
  } catch (err) {
    await stop();
    throw err;
  }
  return { tag: spec.tag, socket: spec.socket, pid: child.pid, exited, stderrTail, stop };
}

/** Escapes a QEMU option value (`,` doubles); control characters refused. */
function optValue(v: string, what: string): string {
  // deno-lint-ignore no-control-regex
  if (v === "" || /[\x00-\x1f\x7f]/.test(v)) {
    throw new Error(`${what} ${JSON.stringify(v)}: expected no control characters`);
  }
  return v.replaceAll(",", ",,");
}

/**
 * QEMU argv for the shares: guest RAM from a shared memfd (vhost-user maps it into virtiofsd;
 * `memoryMiB` must equal `-m`) and one virtio-mmio `vhost-user-fs-device` per share. The machine
 * needs `memory-backend=nbxmem` (see `VIRTIOFS_MEMORY_BACKEND`) and modern virtio-mmio
 * (`-global virtio-mmio.force-legacy=false`: libvhost-user refuses legacy devices).
 */
export function virtiofsQemuArgs(
  shares: Array<Pick<VirtiofsShare, "tag" | "socket">>,
  memoryMiB: number,
): string[] {
  if (shares.length === 0) return [];
  const args = [
    "-object",
    `memory-backend-memfd,id=${VIRTIOFS_MEMORY_BACKEND},size=${memoryMiB}M,share=on`,
  ];
  shares.forEach((s, i) => {
    if (!TAG_RE.test(s.tag)) throw new Error(`virtio-fs tag ${JSON.stringify(s.tag)}: invalid`);
    args.push(
      "-chardev",
      `socket,id=fs${i},path=${optValue(s.socket, "virtio-fs socket path")}`,
      "-device",
      `vhost-user-fs-device,chardev=fs${i},tag=${s.tag}`,
    );
  });
  return args;
}

/** Id of the shared memory backend the machine must use when shares are attached. */
export const VIRTIOFS_MEMORY_BACKEND = "nbxmem";
