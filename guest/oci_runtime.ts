/**
 * The OCI executor inside the guest: crun applies a container's runtime spec (mounts, readonly
 * root, user and groups, capabilities, noNewPrivileges, seccomp, masked/readonly paths, rlimits,
 * sysctls, hostname, cwd/env, cgroup limits). Guest init stays PID 1 and supervises: it writes the
 * bundle, runs `crun run` as the workload and `crun exec` for exec'd processes, through the same
 * stdio/signal/exit plumbing as a chrooted workload.
 */
import { GUEST_CRUN_LIB_DIR, GUEST_CRUN_PATH, type GuestProcess } from "../lib/guest_protocol.ts";
import { ExecError } from "./workload.ts";
import { isShareSource } from "./volumes.ts";
import { CONTAINERS_CGROUP } from "./cgroup_stats.ts";
import { kernelFilesystems } from "./kernel_filesystems.ts";

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === "object" && v !== null && !Array.isArray(v);

/** crun's state directory in the guest (its `--root`). */
export const CRUN_STATE_DIR = "/run/crun";

/** Mount types the guest can satisfy itself (no host path behind them). */
const GUEST_MOUNT_TYPES = new Set([
  "proc",
  "sysfs",
  "tmpfs",
  "devpts",
  "mqueue",
  "cgroup",
  "cgroup2",
  "shm",
]);
/** Files guest init writes into the rootfs itself (from CONFIG's hostname and DNS), unless shared. */
const INIT_OWNED_FILES = new Set(["/etc/resolv.conf", "/etc/hostname", "/etc/hosts"]);

/**
 * Namespaces a pod's container joins from the pod's sandbox when its host spec names one by path
 * (CRI: the pod's IPC namespace, and its PID namespace with shareProcessNamespace). The pod's
 * IPC sysctls (kernel.shm*, kernel.msg*, kernel.sem, fs.mqueue.*) live in that IPC namespace.
 */
export const POD_SHARED_NAMESPACES: ReadonlySet<string> = new Set(["ipc", "pid"]);

/**
 * The newest runtime-spec version the guest's crun (Debian 12's 1.8.1) accepts: it refuses a
 * later `ociVersion` outright ("unknown version specified") although it reads the fields it knows.
 * containerd 2.x writes 1.2.x specs; guestSpec presents a later 1.x spec as this version.
 */
export const CRUN_SPEC_VERSION = "1.1.0";

/** What guestSpec changed, for the init log. */
export interface SpecAdjustments {
  /** Destinations of bind mounts dropped because their host source is not in the guest. */
  droppedMounts: string[];
  /** `destination (type)` of mounts dropped because the guest's kernel lacks their filesystem. */
  unsupportedMounts: string[];
  /**
   * `net.*` sysctls taken out of the spec: the container shares the VM's network namespace (the
   * pod's), where init applies them (applyNetSysctls); crun refuses them without a netns of its own.
   */
  netSysctls: Record<string, string>;
}

/** What guestSpec knows about the guest it prepares a spec for. */
export interface GuestSpecOptions {
  /** The pod sandbox's `/proc/<pid>/ns` in the guest (its shared namespaces are joined). */
  sandboxNs?: string;
  /** The guest kernel's filesystem types (kernel_filesystems.ts); unknown: all are kept. */
  filesystems?: ReadonlySet<string>;
}

/**
 * The spec crun runs in the guest, from the host's `spec`: root at the guest's mounted `root`,
 * no terminal (init owns stdio), the VM's network namespace shared (no network entry), namespace
 * paths dropped (host paths mean nothing in the guest), no hooks or host security labels, bind
 * mounts kept only from the VM's volume share (guest/volumes.ts; otherwise init writes
 * resolv.conf/hostname/hosts), the cgroup at `<CONTAINERS_CGROUP>/<id>`. With `sandboxNs`, a
 * POD_SHARED_NAMESPACES entry that had a host path joins the sandbox's namespace of that type
 * instead. With `filesystems`, mounts of a type the guest's kernel lacks are left out (crun would
 * fail the whole container on them).
 */
export function guestSpec(
  spec: Obj,
  root: string,
  id: string,
  { sandboxNs, filesystems }: GuestSpecOptions = {},
): { spec: Obj; adjusted: SpecAdjustments } {
  const out: Obj = structuredClone(spec);
  if (typeof out.ociVersion === "string" && /^1\.([2-9]|\d{2,})\./.test(out.ociVersion)) {
    out.ociVersion = CRUN_SPEC_VERSION;
  }
  const dropped: string[] = [];
  const unsupported: string[] = [];
  const rootIn = isObj(spec.root) ? spec.root : {};
  out.root = { path: root, readonly: rootIn.readonly === true };
  const proc: Obj = isObj(out.process) ? out.process : {};
  proc.terminal = false;
  delete proc.apparmorProfile;
  delete proc.selinuxLabel;
  delete proc.consoleSize;
  out.process = proc;
  delete out.hooks;
  delete out.annotations;
  if (Array.isArray(out.mounts)) {
    out.mounts = out.mounts.filter((m) => {
      if (!isObj(m) || typeof m.destination !== "string") return false;
      const dest = m.destination.replace(/\/+$/, "");
      const type = typeof m.type === "string" ? m.type : "";
      const opts = Array.isArray(m.options) ? m.options : [];
      const bind = type === "bind" || opts.includes("bind") || opts.includes("rbind");
      // A bind from the VM's volume share (the host bound its source there: lib/vm/volumes.ts).
      if (bind && isShareSource(m.source)) return true;
      if (INIT_OWNED_FILES.has(dest)) return false;
      if (bind || !GUEST_MOUNT_TYPES.has(type)) {
        dropped.push(dest);
        return false;
      }
      if (filesystems && !filesystems.has(type)) {
        unsupported.push(`${dest} (${type})`);
        return false;
      }
      return true;
    });
  }
  const linux: Obj = isObj(out.linux) ? out.linux : {};
  if (Array.isArray(linux.namespaces)) {
    linux.namespaces = linux.namespaces
      .filter((n): n is Obj => isObj(n) && n.type !== "network")
      .map((n) => {
        const shared = sandboxNs !== undefined && typeof n.path === "string" &&
          typeof n.type === "string" && POD_SHARED_NAMESPACES.has(n.type);
        return shared ? { type: n.type, path: `${sandboxNs}/${n.type}` } : { type: n.type };
      });
  }
  const netSysctls: Record<string, string> = {};
  if (isObj(linux.sysctl)) {
    const sysctl: Obj = linux.sysctl;
    for (const [key, value] of Object.entries(sysctl)) {
      if (!key.startsWith("net.")) continue;
      netSysctls[key] = String(value);
      delete sysctl[key];
    }
  }
  delete linux.mountLabel;
  linux.cgroupsPath = `${CONTAINERS_CGROUP}/${id}`;
  out.linux = linux;
  return {
    spec: out,
    adjusted: { droppedMounts: dropped, unsupportedMounts: unsupported, netSysctls },
  };
}

const SYSCTL_KEY_RE = /^net(\.[A-Za-z0-9_-]+)+$/;

/**
 * Writes `net.*` sysctls (guestSpec's netSysctls) into init's network namespace, the VM's and so
 * the pod's: `/proc/sys/net/...`. Throws ExecError naming the key and value it could not set.
 */
export function applyNetSysctls(sysctls: Record<string, string>): void {
  for (const [key, value] of Object.entries(sysctls)) {
    if (!SYSCTL_KEY_RE.test(key)) {
      throw new ExecError(126, `sysctl ${JSON.stringify(key)}: expected dot-separated names`);
    }
    try {
      Deno.writeTextFileSync(`/proc/sys/${key.replaceAll(".", "/")}`, value);
    } catch (err) {
      const why = err instanceof Error ? err.message : String(err);
      throw new ExecError(126, `sysctl ${key}=${JSON.stringify(value)}: ${why}`);
    }
  }
}

/**
 * crun's global arguments: its state dir, and the cgroupfs manager on a unified (v2) hierarchy,
 * none otherwise (crun refuses hybrid hierarchies).
 */
export function crunGlobalArgs(): string[] {
  let unified = false;
  try {
    unified = Deno.statSync("/sys/fs/cgroup/cgroup.controllers").isFile;
  } catch { /* not cgroup v2 */ }
  return ["--root", CRUN_STATE_DIR, `--cgroup-manager=${unified ? "cgroupfs" : "disabled"}`];
}

/**
 * True when the guest's own root is the initramfs (`rootfs`): pivot_root(2) refuses to move it
 * (EINVAL), so crun must use `--no-pivot` (chroot after moving the rootfs mount) there.
 */
export function rootIsInitramfs(mountinfo?: string): boolean {
  let text = mountinfo;
  if (text === undefined) {
    try {
      text = Deno.readTextFileSync("/proc/self/mountinfo");
    } catch {
      return false;
    }
  }
  for (const line of text.split("\n")) {
    const [pre, post] = line.split(" - ");
    if (!post || pre.split(" ")[4] !== "/") continue;
    const fstype = post.split(" ")[0];
    return fstype === "rootfs" || fstype === "ramfs";
  }
  return false;
}

/** crun's path and the environment it runs with: the runtime disk's, else PATH's (dev mode). */
export function crunCommand(): { program: string; env: string[] } {
  try {
    if (Deno.statSync(GUEST_CRUN_PATH).isFile) {
      return { program: GUEST_CRUN_PATH, env: [`LD_LIBRARY_PATH=${GUEST_CRUN_LIB_DIR}`] };
    }
  } catch { /* not in this image: look on PATH */ }
  for (const dir of ["/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin"]) {
    try {
      if (Deno.statSync(`${dir}/crun`).isFile) return { program: `${dir}/crun`, env: [] };
    } catch { /* next */ }
  }
  throw new ExecError(
    127,
    `exec: crun is not in the guest image (${GUEST_CRUN_PATH}); the host needs Debian's crun ` +
      `package when the guest image is built (apt-get install crun)`,
  );
}

/** The bundle directory of container `id` next to the rootfs mount (`<work>/bundles/<id>`). */
export function bundleDirFor(root: string, id: string): string {
  return `${root.slice(0, root.lastIndexOf("/"))}/bundles/${id}`;
}

const ID_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

/**
 * Writes `<bundle>/config.json` for container `id` (the guest spec of `spec`; `sandboxNs` as in
 * guestSpec) and returns the process that runs it (`crun run`), with `terminal` as init's own
 * stdio mode.
 */
export function prepareCrunRun(
  spec: Obj,
  root: string,
  id: string,
  terminal: boolean,
  log: (line: string) => void,
  sandboxNs?: string,
): GuestProcess {
  if (!ID_RE.test(id)) throw new ExecError(127, `exec: container id ${JSON.stringify(id)}`);
  const { spec: s, adjusted } = guestSpec(spec, root, id, {
    sandboxNs,
    filesystems: kernelFilesystems(),
  });
  if (adjusted.droppedMounts.length > 0) {
    log(
      `crun: mounts not in the VM's volume share, left out: ${adjusted.droppedMounts.join(", ")}`,
    );
  }
  if (adjusted.unsupportedMounts.length > 0) {
    log(
      `crun: mounts this guest kernel cannot make, left out: ${
        adjusted.unsupportedMounts.join(", ")
      }`,
    );
  }
  applyNetSysctls(adjusted.netSysctls);
  const bundle = bundleDirFor(root, id);
  Deno.mkdirSync(bundle, { recursive: true, mode: 0o700 });
  Deno.writeTextFileSync(`${bundle}/config.json`, JSON.stringify(s));
  const crun = crunCommand();
  return {
    args: [
      crun.program,
      ...crunGlobalArgs(),
      `--log=file:${crunLogFile(root, id)}`,
      "--log-format=json",
      "run",
      ...(rootIsInitramfs() ? ["--no-pivot"] : []),
      "--bundle",
      bundle,
      id,
    ],
    env: [...crun.env, "PATH=/usr/sbin:/usr/bin:/sbin:/bin"],
    cwd: "/",
    uid: 0,
    gid: 0,
    terminal,
  };
}

/** Where `crun run` of container `id` writes its own messages (JSON lines), in its bundle. */
function crunLogFile(root: string, id: string): string {
  return `${bundleDirFor(root, id)}/crun-log.json`;
}

/**
 * The errors crun logged while running container `id` (`; `-joined), or undefined: crun failed to
 * create the container rather than the container's process ending. A CRI sandbox's stdio is
 * discarded, so without this the host would only see the VM end.
 */
export function crunFailure(root: string, id: string): string | undefined {
  let text: string;
  try {
    text = Deno.readTextFileSync(crunLogFile(root, id));
  } catch {
    return undefined;
  }
  const errors: string[] = [];
  for (const line of text.split("\n")) {
    try {
      const entry = JSON.parse(line);
      if (isObj(entry) && entry.level === "error" && typeof entry.msg === "string") {
        errors.push(entry.msg);
      }
    } catch { /* a partial line */ }
  }
  return errors.length > 0 ? errors.join("; ") : undefined;
}

/**
 * The process that runs `proc` inside container `id` (`crun exec --process FILE`), the process
 * spec written next to the bundle as `exec-<n>.json`: the container's process (capabilities,
 * noNewPrivileges, rlimits) with `proc`'s user (uid, gid, supplementary groups), cwd, env and
 * args; seccomp is the container's.
 */
export function prepareCrunExec(
  spec: Obj,
  root: string,
  id: string,
  n: number,
  proc: GuestProcess,
): CrunExec {
  const dir = bundleDirFor(root, id);
  const file = `${dir}/exec-${n}.json`;
  const pidFile = `${dir}/exec-${n}.pid`;
  const base = guestSpec(spec, root, id).spec.process as Obj;
  Deno.writeTextFileSync(
    file,
    JSON.stringify({
      ...base,
      terminal: false,
      user: {
        uid: proc.uid,
        gid: proc.gid,
        ...(proc.additionalGids?.length ? { additionalGids: proc.additionalGids } : {}),
      },
      args: proc.args,
      env: proc.env,
      cwd: proc.cwd || "/",
    }),
  );
  const crun = crunCommand();
  return {
    process: {
      args: [
        crun.program,
        ...crunGlobalArgs(),
        "exec",
        "--pid-file",
        pidFile,
        "--process",
        file,
        id,
      ],
      env: [...crun.env, "PATH=/usr/sbin:/usr/bin:/sbin:/bin"],
      cwd: "/",
      uid: 0,
      gid: 0,
      terminal: proc.terminal,
    },
    pidFile,
  };
}

/** A `crun exec` to start, and the file where crun writes the exec'd process's pid. */
export interface CrunExec {
  /** The `crun exec` command line. */
  process: GuestProcess;
  /** Written by crun once the process runs: signals go to that pid, not to crun. */
  pidFile: string;
}
