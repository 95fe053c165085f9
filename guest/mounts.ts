/**
 * Mounts: the init's own basics where missing (proc, sys, dev, devpts, shm, tmp, cgroup2), the
 * container rootfs (block device read-only + tmpfs overlay, or virtio-fs), the same basics inside
 * it, and the generated /etc files bound into it.
 */
import { mountErofsLayers } from "./erofs.ts";
import * as c from "./libc.ts";
import type { GuestRootfs } from "../lib/guest_protocol.ts";
import { mountVirtiofs } from "./virtiofs.ts";
import { existsSync } from "../lib/fs.ts";

/** A rootfs setup failure (GuestErrorKind "rootfs"). */
export class RootfsError extends Error {
  /** Creates the error. */
  constructor(message: string) {
    super(message);
    this.name = "RootfsError";
  }
}

/** Mount points currently present (from /proc/self/mountinfo), with their fs types. */
export function mountPoints(): Map<string, string> {
  const out = new Map<string, string>();
  let text = "";
  try {
    text = Deno.readTextFileSync("/proc/self/mountinfo");
  } catch {
    return out;
  }
  for (const line of text.split("\n")) {
    const f = line.split(" ");
    const sep = f.indexOf("-");
    if (f.length < 5 || sep < 0) continue;
    out.set(f[4].replace(/\\040/g, " "), f[sep + 1]);
  }
  return out;
}

interface BaseMount {
  target: string;
  fstype: string;
  source: string;
  flags: number;
  data: string;
  mode: number;
}

const NSD = c.MS.NOSUID | c.MS.NODEV;
/** The basics every root gets, in order. */
const BASICS: BaseMount[] = [
  {
    target: "/proc",
    fstype: "proc",
    source: "proc",
    flags: NSD | c.MS.NOEXEC,
    data: "",
    mode: 0o555,
  },
  {
    target: "/sys",
    fstype: "sysfs",
    source: "sysfs",
    flags: NSD | c.MS.NOEXEC,
    data: "",
    mode: 0o555,
  },
  {
    target: "/dev",
    fstype: "devtmpfs",
    source: "devtmpfs",
    flags: c.MS.NOSUID,
    data: "mode=0755",
    mode: 0o755,
  },
  {
    target: "/dev/pts",
    fstype: "devpts",
    source: "devpts",
    flags: c.MS.NOSUID | c.MS.NOEXEC,
    data: "newinstance,ptmxmode=0666,mode=0620,gid=5",
    mode: 0o755,
  },
  {
    target: "/dev/shm",
    fstype: "tmpfs",
    source: "shm",
    flags: NSD,
    data: "mode=1777",
    mode: 0o1777,
  },
  { target: "/tmp", fstype: "tmpfs", source: "tmpfs", flags: NSD, data: "mode=1777", mode: 0o1777 },
  {
    target: "/sys/fs/cgroup",
    fstype: "cgroup2",
    source: "cgroup2",
    flags: NSD | c.MS.NOEXEC,
    data: "",
    mode: 0o755,
  },
];

function mkdirp(path: string, mode = 0o755): void {
  try {
    Deno.mkdirSync(path, { recursive: true, mode });
  } catch (err) {
    if (!(err instanceof Deno.errors.AlreadyExists)) throw err;
  }
}

function isEmptyDir(path: string): boolean {
  try {
    for (const _ of Deno.readDirSync(path)) return false;
    return true;
  } catch {
    return true;
  }
}

/**
 * Mounts what is missing of the basics in the init's own root. `/tmp` only when it is empty
 * (a tmpfs must not hide files). Returns the targets it mounted.
 */
export function ensureBaseMounts(log: (line: string) => void): string[] {
  const done: string[] = [];
  for (const m of BASICS) {
    if (mountPoints().has(m.target)) continue;
    if (m.target === "/tmp" && !isEmptyDir("/tmp")) continue;
    try {
      mkdirp(m.target, m.mode);
      c.mount(m.source, m.target, m.fstype, m.flags, m.data);
      done.push(m.target);
    } catch (err) {
      log(`mount ${m.target} (${m.fstype}) failed: ${err instanceof Error ? err.message : err}`);
    }
  }
  if (present("/dev/pts") && !existsSync("/dev/ptmx")) {
    try {
      Deno.symlinkSync("pts/ptmx", "/dev/ptmx");
    } catch { /* best effort */ }
  }
  return done;
}

function present(target: string): boolean {
  return mountPoints().has(target);
}

/** Where init keeps what it makes (a tmpfs); dev mode may move it. */
let WORK_DIR = "/run/nerdbox";

/** Moves the work directory (dev mode: a test's temp dir instead of /run/nerdbox). */
export function setWorkDir(dir: string): void {
  WORK_DIR = dir.replace(/\/$/, "");
}

/** Mounts a tmpfs on WORK_DIR unless one is there. */
export function ensureWorkDir(): void {
  if (mountPoints().has(WORK_DIR)) return;
  mkdirp(WORK_DIR);
  c.mount("tmpfs", WORK_DIR, "tmpfs", c.MS.NOSUID | c.MS.NODEV, "mode=0755");
}

/** Mounts the container rootfs at WORK_DIR/root and returns that path (RootfsError on failure). */
export function mountRootfs(rootfs: GuestRootfs): string {
  const root = `${WORK_DIR}/root`;
  try {
    ensureWorkDir();
    mkdirp(root);
    if (rootfs.kind === "virtiofs") {
      mountVirtiofs(rootfs.tag, root);
      return root;
    }
    if (rootfs.kind === "layers") {
      mountErofsLayers(rootfs, WORK_DIR, root);
      return root;
    }
    const lower = `${WORK_DIR}/lower`, upper = `${WORK_DIR}/upper`, work = `${WORK_DIR}/work`;
    for (const d of [lower, upper, work]) mkdirp(d);
    const deadline = Date.now() + 2000;
    while (!existsSync(rootfs.device) && Date.now() < deadline) {
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 20);
    }
    if (!existsSync(rootfs.device)) throw new Error(`block device ${rootfs.device} does not exist`);
    c.mount(rootfs.device, lower, rootfs.fstype, c.MS.RDONLY, "");
    c.mount("overlay", root, "overlay", 0, `lowerdir=${lower},upperdir=${upper},workdir=${work}`);
    return root;
  } catch (err) {
    const what = rootfs.kind === "virtiofs"
      ? `virtio-fs tag "${rootfs.tag}"`
      : rootfs.kind === "layers"
      ? `erofs layers ${rootfs.devices.join(", ")}`
      : `${rootfs.fstype} on ${rootfs.device}`;
    throw new RootfsError(
      `cannot mount the rootfs (${what}): ${err instanceof Error ? err.message : err}`,
    );
  }
}

/** Mounts proc, sys (+cgroup2), dev (bound recursively), shm, and tmp (when empty) inside `root`. */
export function prepareRoot(root: string): void {
  try {
    const m = (
      src: string,
      rel: string,
      fstype: string,
      flags: number,
      data = "",
      mode = 0o755,
    ) => {
      mkdirp(`${root}${rel}`, mode);
      c.mount(src, `${root}${rel}`, fstype, flags, data);
    };
    m("proc", "/proc", "proc", NSD | c.MS.NOEXEC, "", 0o555);
    m("sysfs", "/sys", "sysfs", NSD | c.MS.NOEXEC, "", 0o555);
    try {
      m("cgroup2", "/sys/fs/cgroup", "cgroup2", NSD | c.MS.NOEXEC);
    } catch { /* no cgroup2 in this kernel: not fatal */ }
    m("/dev", "/dev", "", c.MS.BIND | c.MS.REC);
    if (!present(`${root}/dev/shm`)) m("shm", "/dev/shm", "tmpfs", NSD, "mode=1777", 0o1777);
    if (isEmptyDir(`${root}/tmp`)) m("tmpfs", "/tmp", "tmpfs", NSD, "mode=1777", 0o1777);
  } catch (err) {
    throw new RootfsError(`cannot prepare ${root}: ${err instanceof Error ? err.message : err}`);
  }
}

/**
 * Puts generated files into `root`/etc: written to WORK_DIR/etc and bind-mounted over the
 * target (so a shared virtio-fs rootfs is not modified); written in place where binding fails.
 */
export function installEtcFiles(root: string, files: Record<string, string>): void {
  const staged = `${WORK_DIR}/etc`;
  mkdirp(staged);
  mkdirp(`${root}/etc`);
  for (const [name, text] of Object.entries(files)) {
    const src = `${staged}/${name}`, dst = `${root}/etc/${name}`;
    Deno.writeTextFileSync(src, text, { mode: 0o644 });
    try {
      const st = existsSync(dst) ? Deno.lstatSync(dst) : undefined;
      if (st?.isSymlink) throw new Error("target is a symlink");
      if (!st) Deno.writeTextFileSync(dst, "");
      c.mount(src, dst, "", c.MS.BIND);
    } catch {
      try {
        Deno.removeSync(dst);
      } catch { /* absent */ }
      Deno.writeTextFileSync(dst, text, { mode: 0o644 });
    }
  }
}
