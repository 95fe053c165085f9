/**
 * The VM's volume share (QEMU): host bind mounts of the OCI spec (volumes, hostPath, CRI's
 * resolv.conf/hosts/hostname) reach the guest through one virtio-fs share per VM, the directory
 * `<stateDir>/volumes`, served by a virtiofsd started at boot. Each container's bind sources are
 * bound into it at `<container id>/<n>` before the container is created, so later containers of a
 * pod get theirs without hot-plug; the guest binds them on to their destinations.
 *
 * The binds are made in the daemon's own mount namespace (`unshare --propagation slave`, then
 * `nsenter --mount … mount --bind`): virtiofsd (sandbox=chroot, no namespace of its own) serves
 * mounts added there after it started, the host's mount table never shows them, a recursive
 * removal of the state dir on the host cannot reach a source's files, and they all vanish with
 * the daemon (any exit, even a SIGKILL of everything). A source must exist when it is bound; a
 * host mount made below it later reaches the VM only if the host mount propagates (shared).
 */
import type { GuestVolumes } from "../guest_protocol.ts";
import type { VmPlan, VolumeBind, VolumeShareHandle } from "./types.ts";
import { startVirtiofsd, virtiofsAvailable, type VirtiofsShare } from "./virtiofs.ts";

/** virtio-fs tag of the volume share. */
export const VOLUMES_TAG = "volumes";
/** util-linux's nsenter (runs mount/umount in the daemon's mount namespace). */
export const NSENTER = "/usr/bin/nsenter";

/** A running volume share. */
export interface VolumeShare extends VolumeShareHandle {
  /** The virtiofsd serving it. */
  readonly share: VirtiofsShare;
  /** Host directory shared (`<stateDir>/volumes`). */
  readonly dir: string;
  /** Stops the daemon (its binds go with its namespace) and removes the directory. */
  stop(): Promise<void>;
}

const SEGMENT_RE = /^[A-Za-z0-9_.-]+$/;

/** Checks a path inside the share: relative, segments of [A-Za-z0-9_.-], no `.` or `..`. */
export function checkShareTarget(target: string): string {
  const parts = target.split("/");
  if (parts.some((p) => !SEGMENT_RE.test(p) || p === "." || p === "..")) {
    throw new Error(
      `volume share path ${JSON.stringify(target)}: expected relative segments of ` +
        `[A-Za-z0-9_.-] without . or ..`,
    );
  }
  return target;
}

/** mount(8)'s argv (after `mount`) binding `source` on `path` in the share. */
export function bindArgs(b: VolumeBind, path: string): string[] {
  return [
    b.recursive ? "--rbind" : "--bind",
    ...(b.readOnly ? ["-o", "ro"] : []),
    "--",
    b.source,
    path,
  ];
}

async function run(args: string[]): Promise<{ ok: boolean; out: string; err: string }> {
  const res = await new Deno.Command(NSENTER, {
    args,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { ok: res.success, out: dec.decode(res.stdout), err: dec.decode(res.stderr).trim() };
}

function unescapeMountinfo(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o) => String.fromCharCode(parseInt(o, 8)));
}

/**
 * Starts the share of `<stateDir>/volumes` (socket `<socketDir>/fs1.sock`, daemon pid given to
 * `onSpawn`). Leaves nothing behind on failure.
 */
export async function startVolumeShare(
  stateDir: string,
  socketDir: string,
  onSpawn: (pid: number) => Promise<void> | void,
): Promise<VolumeShare> {
  const why = virtiofsAvailable();
  if (why) throw new Error(`volume share: ${why}`);
  await Deno.mkdir(`${stateDir}/volumes`, { recursive: true, mode: 0o700 });
  const dir = await Deno.realPath(`${stateDir}/volumes`);
  let share: VirtiofsShare;
  try {
    share = await startVirtiofsd({
      tag: VOLUMES_TAG,
      source: dir,
      socket: `${socketDir}/fs1.sock`,
      onSpawn,
      privateMounts: true,
    });
  } catch (err) {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    throw err;
  }
  const ns = ["-t", String(share.pid), "-m", "--"];
  // Once the daemon is gone its namespace (and every bind) is too; its pid may be reused.
  let alive = true;
  share.exited.then(() => (alive = false), () => (alive = false));

  /** Mount points at or below `path` in the daemon's namespace, deepest first. */
  const pointsUnder = async (path: string): Promise<string[]> => {
    if (!alive) return [];
    const res = await run([...ns, "cat", "/proc/self/mountinfo"]);
    if (!res.ok) return [];
    return res.out.split("\n").filter((l) => l).map((l) => unescapeMountinfo(l.split(" ")[4]))
      .filter((p) => p === path || p.startsWith(`${path}/`))
      .sort((a, b) => b.length - a.length);
  };

  const release = async (prefix: string): Promise<void> => {
    const path = `${dir}/${checkShareTarget(prefix)}`;
    for (let round = 0; round < 8; round++) {
      const points = await pointsUnder(path);
      if (points.length === 0) break;
      for (const p of points) {
        const res = await run([...ns, "umount", "--", p]);
        if (!res.ok) await run([...ns, "umount", "-l", "--", p]);
      }
    }
    const left = await pointsUnder(path);
    if (left.length > 0) throw new Error(`volume share: still mounted: ${left.join(", ")}`);
    // Nothing is ever mounted here in the host's namespace: a plain removal is safe.
    await Deno.remove(path, { recursive: true }).catch(() => {});
  };

  const bind = async (binds: VolumeBind[]): Promise<void> => {
    const done = new Set<string>();
    try {
      for (const b of binds) {
        const target = checkShareTarget(b.target);
        const st = await Deno.stat(b.source).catch(() => null);
        if (!st) throw new Error(`bind mount source ${JSON.stringify(b.source)}: does not exist`);
        if (!st.isDirectory && !st.isFile) {
          throw new Error(
            `bind mount source ${JSON.stringify(b.source)}: expected a directory or a file`,
          );
        }
        const path = `${dir}/${target}`;
        await Deno.mkdir(path.slice(0, path.lastIndexOf("/")), { recursive: true, mode: 0o755 });
        if (st.isDirectory) await Deno.mkdir(path, { mode: 0o755 });
        else await Deno.writeFile(path, new Uint8Array(), { createNew: true, mode: 0o644 });
        done.add(target.split("/")[0]);
        if (!alive) throw new Error(`the VM's volume share (virtiofsd) has ended`);
        const res = await run([...ns, "mount", ...bindArgs(b, path)]);
        if (!res.ok) {
          throw new Error(`bind mount ${JSON.stringify(b.source)} into the VM: ${res.err}`);
        }
      }
    } catch (err) {
      for (const p of done) await release(p).catch(() => {});
      throw err;
    }
  };

  const stop = async () => {
    await share.stop();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  };
  return { share, dir, bind, release, stop };
}

/**
 * Realises `plan.volumes` for a QEMU run: starts the share, makes the first container's binds and
 * returns what the guest is told; nothing when the plan has no volumes. Stops the share on failure.
 */
export async function attachVolumes(
  plan: Pick<VmPlan, "volumes" | "stateDir">,
  socketDir: string,
  onSpawn: (pid: number) => Promise<void> | void,
): Promise<{ share: VolumeShare; guest: GuestVolumes } | undefined> {
  if (!plan.volumes) return undefined;
  const share = await startVolumeShare(plan.stateDir, socketDir, onSpawn);
  try {
    await share.bind(plan.volumes.binds);
  } catch (err) {
    await share.stop();
    throw err;
  }
  return { share, guest: { tag: VOLUMES_TAG, mounts: plan.volumes.mounts } };
}
