/**
 * The VM's volume share (QEMU): host bind mounts of the OCI spec (volumes, hostPath, CRI's
 * resolv.conf/hosts/hostname) reach the guest through one virtio-fs share per VM, the directory
 * `<stateDir>/volumes`, served by a virtiofsd started at boot. Each container's bind sources are
 * bound into it at `<container id>/<n>` before the container is created, so later containers of a
 * pod get theirs without hot-plug; the guest binds them on to their destinations.
 *
 * The binds are made in the daemon's own mount namespace (`unshare --propagation slave`): each
 * source's mount tree is cloned in the host's namespace and attached there (BIND_HELPER:
 * open_tree, setns, move_mount), so it is resolved as the host sees it at that moment, host mounts
 * made after the VM booted included. virtiofsd (sandbox=chroot, no namespace of its own) serves
 * mounts added after it started; the host's mount table never shows them, a recursive removal of
 * the state dir on the host cannot reach a source's files, and they all vanish with the daemon
 * (any exit, even a SIGKILL of everything).
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

/** perl (perl-base is Essential in Debian: always there), single-threaded, so it may setns(2). */
export const PERL = "/usr/bin/perl";

/**
 * The bind helper: clones the source's mount tree in the caller's (the host's) namespace with
 * open_tree(2) (OPEN_TREE_CLONE, AT_RECURSIVE for rbind), makes it read-only with mount_setattr(2)
 * (the top mount only, as OCI's `ro`), enters the daemon's mount namespace with setns(2) and
 * attaches the clone there with move_mount(2). Deno cannot: setns(CLONE_NEWNS) refuses a
 * multi-threaded process. Arguments: syscall numbers, then ns path, source, target, ro, rec.
 */
export const BIND_HELPER = `use strict;
my ($open_tree, $move_mount, $mount_setattr, $setns, $nspath, $src, $dst, $ro, $rec) = @ARGV;
my $fd = syscall($open_tree, -100, $src, 1 | 0x80000 | ($rec ? 0x8000 : 0));
die "open_tree: $!\n" if $fd < 0;
if ($ro) {
  my $attr = pack("QQQQ", 1, 0, 0, 0);
  my $empty = "";
  syscall($mount_setattr, $fd, $empty, 0x1000, $attr, length($attr)) == 0
    or die "mount_setattr(ro): $!\n";
}
open(my $ns, "<", $nspath) or die "open $nspath: $!\n";
syscall($setns, fileno($ns), 0x20000) == 0 or die "setns: $!\n";
my $empty = "";
syscall($move_mount, $fd, $empty, -100, $dst, 4) == 0 or die "move_mount: $!\n";
`;

/** open_tree, move_mount, mount_setattr, setns numbers per architecture. */
const SYSCALLS: Record<string, [number, number, number, number]> = {
  x86_64: [428, 429, 442, 308],
  aarch64: [428, 429, 442, 268],
};

/** The bind helper's argv (after `perl`) binding `b.source` on `path` in namespace `nsPath`. */
export function bindArgs(b: VolumeBind, path: string, nsPath: string): string[] {
  const nr = SYSCALLS[Deno.build.arch];
  if (!nr) throw new Error(`volume share: no syscall numbers for ${Deno.build.arch}`);
  return [
    "-e",
    BIND_HELPER,
    "--",
    ...nr.map(String),
    nsPath,
    b.source,
    path,
    b.readOnly ? "1" : "0",
    b.recursive ? "1" : "0",
  ];
}

async function run(
  args: string[],
  bin = NSENTER,
): Promise<{ ok: boolean; out: string; err: string }> {
  const res = await new Deno.Command(bin, {
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
  const dir = await makeShareDir(stateDir);
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
  const binder = namespaceBinder(dir, share.pid, share.exited, "the VM's volume share (virtiofsd)");
  const stop = async () => {
    await share.stop();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  };
  return { share, dir, ...binder, stop };
}

/** The share directory of the VM with state dir `stateDir`. */
function volumesDir(stateDir: string): string {
  return `${stateDir}/volumes`;
}

/** Creates the share directory (mode 0700) and returns its real path. */
export async function makeShareDir(stateDir: string): Promise<string> {
  await Deno.mkdir(volumesDir(stateDir), { recursive: true, mode: 0o700 });
  return await Deno.realPath(volumesDir(stateDir));
}

/**
 * bind/release for the share directory `dir` served by process `pid` from a mount namespace of
 * its own (virtiofsd's; libkrun's VMM, whose virtio-fs server is in-process): binds are made in
 * that namespace only and vanish with it (`exited` settles when the process is gone). `what`
 * names the server in errors.
 */
export function namespaceBinder(
  dir: string,
  pid: number,
  exited: Promise<unknown>,
  what: string,
): VolumeShareHandle {
  const ns = ["-t", String(pid), "-m", "--"];
  // Once the server is gone its namespace (and every bind) is too; its pid may be reused.
  let alive = true;
  exited.then(() => (alive = false), () => (alive = false));

  /** Mount points at or below `path` in the server's namespace, deepest first. */
  const pointsUnder = async (path: string): Promise<string[]> => {
    if (!alive) return [];
    const res = await run([...ns, "/bin/cat", "/proc/self/mountinfo"]);
    if (!res.ok) {
      if (!alive) return [];
      throw new Error(`volume share: cannot list its mounts: ${res.err}`);
    }
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
        const res = await run([...ns, "/bin/umount", "--", p]);
        if (!res.ok) await run([...ns, "/bin/umount", "-l", "--", p]);
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
        if (!alive) throw new Error(`${what} has ended`);
        // Never into the host's own mount table.
        if (Deno.readLinkSync(`/proc/${pid}/ns/mnt`) === Deno.readLinkSync("/proc/self/ns/mnt")) {
          throw new Error(`${what} (pid ${pid}) has no mount namespace of its own`);
        }
        const res = await run(bindArgs(b, path, `/proc/${pid}/ns/mnt`), PERL);
        if (!res.ok) {
          throw new Error(`bind mount ${JSON.stringify(b.source)} into the VM: ${res.err}`);
        }
      }
    } catch (err) {
      for (const p of done) await release(p).catch(() => {});
      throw err;
    }
  };
  return { bind, release };
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
