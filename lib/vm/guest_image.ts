/**
 * Assembles the guest image from what is installed: the running Deno binary and its shared
 * libraries, the guest program from this checkout (bundled to one JS file), the Debian cloud
 * kernel (as a PVH `vmlinux`) and its modules. Built once per set of inputs, cached by a content
 * hash under NERDBOX_CACHE_DIR (default /var/lib/nerdbox/cache), published by an atomic rename.
 * One file over ~400 lines: one build behind one cache key, and every input it hashes is read here.
 */
import { type CpioEntry, encodeCpio, parentDirs } from "./initramfs.ts";
import {
  extractVmlinux,
  findHostKernel,
  guestModules,
  type HostKernel,
  moduleName,
} from "./kernel.ts";
import { makeExt4Image } from "./rootfs_image.ts";
import { BUSYBOX } from "./busybox_rootfs.ts";
import { crunRuntimeFiles, HOST_CRUN, installRuntimeFiles } from "./guest_crun.ts";
import { exists } from "../fs.ts";
import { fileIdentity, memoPath, pruneMemos, readMemo, writeMemo } from "./guest_image_memo.ts";

/** Everything a backend needs to boot the guest. */
export interface GuestImage {
  /** Guest root: `opt/nerdbox/{deno,guest/,lib/}`, Deno's libs at their usual paths (libkrun's root). */
  rootDir: string;
  /** Uncompressed PVH `vmlinux` (QEMU `-kernel`). */
  kernel: string;
  /** Stage-1 initramfs (busybox, modules, Deno's libs, `/init`). */
  initramfs: string;
  /** Read-only ext4 image of `rootDir/opt/nerdbox`, mounted by stage-1 at `/opt/nerdbox`. */
  runtimeDisk: string;
  /** Module names in load order. */
  modules: string[];
  /** Kernel release the image was built from. */
  kernelRelease: string;
  /** Cache key of this image. */
  hash: string;
}

/** Bumped whenever the image layout or the stage-1 script changes. */
export const GUEST_IMAGE_BUILDER_VERSION = 3;
/** Guest path of the runtime disk's mount point (stage-1 mounts it; also the dir inside rootDir). */
export const GUEST_RUNTIME_DIR = "/opt/nerdbox";
/** Guest path of the Deno binary. */
export const GUEST_DENO = `${GUEST_RUNTIME_DIR}/deno`;
/** Guest path of the guest program (docs/guest-init.md). */
export const GUEST_ENTRY = `${GUEST_RUNTIME_DIR}/guest/main.ts`;
/** Serial number of the runtime disk's virtio-blk device (stage-1 finds the disk by it). */
export const RUNTIME_DISK_SERIAL = "nerdbox-runtime";
/** Kernel command-line word that makes stage-1 print PROBE_OK_MARKER and power off (accel probe). */
export const PROBE_CMDLINE_WORD = "nerdbox.probe";
/** Kernel command-line word for a VM without NICs: stage-1 skips the virtio-net modules. */
export const NONET_CMDLINE_WORD = "nerdbox.nonet";
/** Modules only a NIC needs (virtio_net and its dependencies). */
export const NET_ONLY_MODULES = ["virtio_net", "net_failover", "failover"];
/** Console line stage-1 prints in probe mode once the runtime disk is mounted and Deno runs. */
export const PROBE_OK_MARKER = "nerdbox-probe-ok";

/** argv (after the Deno binary) that runs the guest init. */
export function guestInitArgs(): string[] {
  return ["run", "-A", "--no-check", "--cached-only", "--no-config", GUEST_ENTRY];
}

/** Environment the guest init starts with (set by stage-1; libkrun passes it with krun_set_exec). */
export function guestInitEnv(): Record<string, string> {
  return {
    PATH: "/usr/sbin:/usr/bin:/sbin:/bin",
    HOME: "/run/deno",
    DENO_DIR: "/run/deno",
    DENO_NO_UPDATE_CHECK: "1",
    NO_COLOR: "1",
  };
}

/** The repository root (this file is lib/vm/guest_image.ts). */
const REPO_ROOT = new URL("../../", import.meta.url).pathname;
/** The host modules that decide the image's layout (stage-1, the module list): memo inputs. */
const BUILDER_MODULES = ["./guest_image.ts", "./kernel.ts", "./guest_crun.ts"].map((m) =>
  new URL(m, import.meta.url).pathname
);

/** Where images are cached. */
export function cacheDir(): string {
  return Deno.env.get("NERDBOX_CACHE_DIR") ?? "/var/lib/nerdbox/cache";
}

function shQuoteFixed(s: string): string {
  // Only for the fixed, nerdbox-owned strings of the stage-1 script (never user values).
  if (!/^[A-Za-z0-9_./=:-]*$/.test(s)) throw new Error(`stage-1: unexpected character in ${s}`);
  return s;
}

/**
 * The stage-1 `/init` run by busybox: mounts devtmpfs, proc and sysfs (left mounted, as libkrun's
 * init.krun does), loads the modules in order, mounts the runtime disk (found by its virtio-blk
 * serial) read-only at /opt/nerdbox and execs Deno on the guest program as PID 1. No networking.
 */
export function stage1Script(modules: string[]): string {
  const env = Object.entries(guestInitEnv()).map(([k, v]) => `export ${k}=${shQuoteFixed(v)}`);
  const argv = [GUEST_DENO, ...guestInitArgs()].map(shQuoteFixed).join(" ");
  const skip = NET_ONLY_MODULES.filter((m) => modules.includes(m)).map(shQuoteFixed).join(" ");
  return [
    "#!/bin/busybox sh",
    "B=/bin/busybox",
    "$B mount -t devtmpfs -o nosuid devtmpfs /dev",
    "$B mount -t proc -o nosuid,nodev,noexec proc /proc",
    "$B mount -t sysfs -o nosuid,nodev,noexec sysfs /sys",
    // Shell builtins where a fork+exec would do (each costs milliseconds under TCG).
    "read -r cmdline < /proc/cmdline",
    "skip=",
    `case " $cmdline " in *" ${NONET_CMDLINE_WORD} "*) skip=" ${skip} " ;; esac`,
    `for m in ${modules.map(shQuoteFixed).join(" ")}; do`,
    '  case "$skip" in *" $m "*) continue ;; esac',
    '  $B insmod /lib/modules/$m.ko || echo "nerdbox stage-1: insmod $m failed"',
    "done",
    "dev=",
    "i=0",
    'while [ -z "$dev" ] && [ $i -lt 200 ]; do',
    "  for s in /sys/block/vd*/serial; do",
    '    ser=; [ -r "$s" ] && read -r ser < "$s"',
    `    [ "$ser" = ${RUNTIME_DISK_SERIAL} ] && dev=\${s%/serial} && dev=/dev/\${dev##*/}`,
    "  done",
    '  [ -z "$dev" ] && $B usleep 10000',
    "  i=$((i+1))",
    "done",
    `[ -n "$dev" ] || { echo "nerdbox stage-1: runtime disk (serial ${RUNTIME_DISK_SERIAL}) not found"; $B poweroff -f; }`,
    `$B mount -t ext4 -o ro,noatime "$dev" ${GUEST_RUNTIME_DIR} || { echo "nerdbox stage-1: cannot mount $dev"; $B poweroff -f; }`,
    "$B mkdir -p /run/deno",
    ...env,
    `case " $cmdline " in *" ${PROBE_CMDLINE_WORD} "*)`,
    `  ${GUEST_DENO} --version >/dev/null && echo ${PROBE_OK_MARKER}`,
    "  $B poweroff -f ;;",
    "esac",
    'read -r up _ < /proc/uptime; echo "nerdbox stage-1: exec deno at uptime $up"',
    `exec ${argv}`,
    "",
  ].join("\n");
}

async function sha256Hex(data: Uint8Array | string): Promise<string> {
  const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
  const d = await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>);
  return Array.from(new Uint8Array(d), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Shared libraries of an ELF per `ldd`: `[guest path, host file]`. */
export async function sharedLibs(binary: string): Promise<Array<[string, string]>> {
  const out = await new Deno.Command("ldd", { args: [binary], stdout: "piped", stderr: "piped" })
    .output();
  const text = new TextDecoder().decode(out.stdout);
  if (!out.success) {
    throw new Error(`ldd ${binary} failed: ${new TextDecoder().decode(out.stderr).trim()}`);
  }
  const libs: Array<[string, string]> = [];
  for (const line of text.split("\n")) {
    const arrow = line.match(/^\s*(\S+)\s+=>\s+(\/\S+)\s+\(/);
    const bare = line.match(/^\s*(\/\S+)\s+\(/);
    const path = arrow?.[2] ?? bare?.[1];
    if (path) libs.push([path, await Deno.realPath(path)]);
  }
  return libs;
}

/** Host files the guest program imports (shipped beside guest/), relative to the repo root. */
export const GUEST_SHARED_SOURCES = [
  "lib/guest_protocol.ts",
  "lib/linux_resources.ts",
  "lib/fs.ts",
  "ffi/libc.ts",
];

/** Guest program sources: guest/**\/*.ts and GUEST_SHARED_SOURCES, relative to the repo root. */
async function guestSources(srcRoot: string): Promise<string[]> {
  const files: string[] = [];
  const walk = async (rel: string): Promise<void> => {
    for await (const e of Deno.readDir(`${srcRoot}${rel}`)) {
      const p = `${rel}/${e.name}`;
      if (e.isDirectory) await walk(p);
      else if (e.isFile && e.name.endsWith(".ts")) files.push(p);
    }
  };
  try {
    await walk("guest");
  } catch {
    // checked below
  }
  if (!files.includes("guest/main.ts")) {
    throw new Error(`guest image: ${srcRoot}guest/main.ts (the guest init) is missing`);
  }
  files.push(...GUEST_SHARED_SOURCES);
  return files.sort();
}

/** `NERDBOX_GUEST_PREWARM=0` builds the image without the pre-warmed Deno cache (to measure it). */
function prewarmEnabled(): boolean {
  return Deno.env.get("NERDBOX_GUEST_PREWARM") !== "0";
}

/** Regular files under `dir`, relative, sorted. */
async function listTree(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (rel: string): Promise<void> => {
    for await (const e of Deno.readDir(rel ? `${dir}/${rel}` : dir)) {
      const p = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory) await walk(p);
      else if (e.isFile) out.push(p);
    }
  };
  await walk("");
  return out.sort();
}

/**
 * Fills `<root>/run/deno` with Deno's transpile cache for the guest program by running
 * `deno cache` (which executes nothing) chrooted into the image root, so that the cache keys are
 * the guest's own paths. Returns false (the guest then transpiles at boot) when chroot is not
 * permitted. Measured under TCG: see docs/qemu.md.
 */
async function prewarmDenoDir(root: string): Promise<boolean> {
  const env = guestInitEnv();
  await Deno.mkdir(`${root}${env.DENO_DIR}`, { recursive: true });
  let out: Deno.CommandOutput;
  try {
    out = await new Deno.Command("chroot", {
      args: [root, GUEST_DENO, "cache", "--no-config", "--quiet", GUEST_ENTRY],
      env,
      clearEnv: true,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
  } catch {
    return false;
  }
  if (!out.success) {
    await Deno.remove(`${root}${env.DENO_DIR}`, { recursive: true }).catch(() => {});
    await Deno.mkdir(`${root}${env.DENO_DIR}`, { recursive: true });
    return false;
  }
  return true;
}

/** Extracts (once, cached by the bzImage's identity) the kernel's vmlinux; returns its path. */
async function cachedVmlinux(kernel: HostKernel, cache: string): Promise<string> {
  const key = (await sha256Hex(await fileIdentity(kernel.bzImage))).slice(0, 16);
  const path = `${cache}/vmlinux-${kernel.release}-${key}`;
  if (await exists(path)) return path;
  const tmp = `${path}.tmp-${crypto.randomUUID()}`;
  try {
    await extractVmlinux(kernel.bzImage, tmp);
    await Deno.rename(tmp, path);
  } finally {
    await Deno.remove(tmp).catch(() => {});
  }
  return path;
}

let inflight: Promise<GuestImage> | undefined;

/** Options of `ensureGuestImage` (tests only; the product uses the defaults). */
export interface GuestImageOptions {
  /** Directory holding `guest/` and GUEST_SHARED_SOURCES (default: this checkout). */
  sourceRoot?: string;
  /** Cache directory (default: `cacheDir()`). */
  cacheDir?: string;
}

/** Returns the guest image, building it if no cached image matches the current inputs. */
export function ensureGuestImage(opts: GuestImageOptions = {}): Promise<GuestImage> {
  if (opts.sourceRoot !== undefined || opts.cacheDir !== undefined) return buildOrReuse(opts);
  inflight ??= buildOrReuse(opts).finally(() => {
    inflight = undefined;
  });
  return inflight;
}

async function buildOrReuse(opts: GuestImageOptions): Promise<GuestImage> {
  const srcRoot = (opts.sourceRoot ?? REPO_ROOT).replace(/\/?$/, "/");
  const cache = opts.cacheDir ?? cacheDir();
  await Deno.mkdir(cache, { recursive: true });
  const kernel = await findHostKernel();
  // The running Deno; a `deno compile`d nerdbox is not a Deno CLI: NERDBOX_GUEST_DENO names one.
  const deno = Deno.env.get("NERDBOX_GUEST_DENO") ?? Deno.execPath();
  const sources = await guestSources(srcRoot);
  // Unchanged inputs (by identity, this builder's own modules included): the memo's record.
  const memo = await memoPath(cache, [
    deno,
    BUSYBOX,
    HOST_CRUN,
    kernel.bzImage,
    `${kernel.modulesDir}/modules.dep`,
    ...BUILDER_MODULES,
    ...sources.map((s) => `${srcRoot}${s}`),
  ], [`builder=${GUEST_IMAGE_BUILDER_VERSION}`, Deno.version.deno, `prewarm=${prewarmEnabled()}`]);
  const known = memo ? await readMemo(memo) : undefined;
  if (known) return known;
  const modulePaths = await guestModules(kernel);
  const modules = modulePaths.map(moduleName);
  const h: string[] = [
    `builder=${GUEST_IMAGE_BUILDER_VERSION}`,
    `deno=${await fileIdentity(deno)}:${Deno.version.deno}`,
    `busybox=${await fileIdentity(BUSYBOX)}`,
    `crun=${await fileIdentity(HOST_CRUN).catch(() => "none")}`,
    `kernel=${await fileIdentity(kernel.bzImage)}`,
    `modules=${modulePaths.join(",")}`,
    `stage1=${await sha256Hex(stage1Script(modules))}`,
    `prewarm=${prewarmEnabled()}`,
  ];
  for (const s of sources) h.push(`${s}=${await sha256Hex(await Deno.readFile(`${srcRoot}${s}`))}`);
  const hash = (await sha256Hex(h.join("\n"))).slice(0, 24);
  const vmlinux = await cachedVmlinux(kernel, cache);
  const dir = `${cache}/guest-${hash}`;
  const image: GuestImage = {
    rootDir: `${dir}/root`,
    kernel: vmlinux,
    initramfs: `${dir}/initramfs.cpio`,
    runtimeDisk: `${dir}/runtime.ext4`,
    modules,
    kernelRelease: kernel.release,
    hash,
  };
  if (await exists(`${dir}/complete`)) {
    if (memo) await writeMemo(memo, image);
    return image;
  }
  const tmp = `${cache}/.guest-${hash}.tmp-${crypto.randomUUID()}`;
  try {
    await build(tmp, srcRoot, deno, sources, modulePaths, modules);
    await Deno.writeTextFile(`${tmp}/complete`, h.join("\n") + "\n");
    try {
      await Deno.rename(tmp, dir);
    } catch (err) {
      // Another builder won the race with the same inputs: use its image.
      if (!(await exists(`${dir}/complete`))) throw err;
    }
  } finally {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
  }
  await pruneCache(cache, `guest-${hash}`);
  if (memo) await writeMemo(memo, image);
  return image;
}

/**
 * Removes superseded images: keeps `current`, the newest other one and any built in the last
 * 10 minutes (a VM may be starting on it); older ones and stale half-built temp dirs (> 1 h) go.
 * Running VMs keep their open files.
 */
async function pruneCache(cache: string, current: string): Promise<void> {
  const images: Array<{ name: string; mtime: number }> = [];
  for await (const e of Deno.readDir(cache)) {
    if (!e.isDirectory || e.name === current) continue;
    const st = await Deno.stat(`${cache}/${e.name}`).catch(() => null);
    const mtime = st?.mtime?.getTime() ?? 0;
    if (e.name.startsWith("guest-")) images.push({ name: e.name, mtime });
    else if (e.name.startsWith(".guest-") && Date.now() - mtime > 3_600_000) {
      await Deno.remove(`${cache}/${e.name}`, { recursive: true }).catch(() => {});
    }
  }
  images.sort((a, b) => b.mtime - a.mtime);
  for (const old of images.slice(1).filter((i) => Date.now() - i.mtime > 600_000)) {
    await Deno.remove(`${cache}/${old.name}`, { recursive: true }).catch(() => {});
  }
  await pruneMemos(cache);
}

async function build(
  tmp: string,
  srcRoot: string,
  deno: string,
  sources: string[],
  modulePaths: string[],
  modules: string[],
): Promise<void> {
  const root = `${tmp}/root`;
  const rt = `${root}${GUEST_RUNTIME_DIR}`;
  await Deno.mkdir(rt, { recursive: true });
  // Runtime: Deno and the guest program's sources.
  await Deno.copyFile(deno, `${rt}/deno`);
  await Deno.chmod(`${rt}/deno`, 0o755);
  for (const s of sources) {
    const dest = `${rt}/${s}`;
    await Deno.mkdir(dest.slice(0, dest.lastIndexOf("/")), { recursive: true });
    await Deno.copyFile(`${srcRoot}${s}`, dest);
  }
  // Deno's shared libraries at their host paths, in the root and in the initramfs.
  const libs = await sharedLibs(deno);
  // crun (the OCI executor) and the libraries it needs beyond Deno's, on the runtime disk.
  await installRuntimeFiles(rt, await crunRuntimeFiles(sharedLibs, new Set(libs.map(([g]) => g))));
  const entries: CpioEntry[] = [];
  const dirs = new Set<string>();
  const add = (e: CpioEntry) => {
    entries.push(...parentDirs(e.path, dirs));
    if (e.kind === "dir") {
      if (dirs.has(e.path)) return;
      dirs.add(e.path);
    }
    entries.push(e);
  };
  for (const d of ["dev", "proc", "sys", "tmp", "run", "etc", "root", GUEST_RUNTIME_DIR.slice(1)]) {
    if (d !== GUEST_RUNTIME_DIR.slice(1)) await Deno.mkdir(`${root}/${d}`, { recursive: true });
    add({ kind: "dir", path: d, mode: d === "tmp" ? 0o1777 : 0o755 });
  }
  add({ kind: "chardev", path: "dev/console", mode: 0o600, major: 5, minor: 1 });
  add({ kind: "file", path: "bin/busybox", mode: 0o755, data: await Deno.readFile(BUSYBOX) });
  // libkrun's root needs it too: guest init runs it as `setsid -c` for terminal workloads.
  await Deno.mkdir(`${root}/bin`, { recursive: true });
  await Deno.copyFile(BUSYBOX, `${root}/bin/busybox`);
  await Deno.chmod(`${root}/bin/busybox`, 0o755);
  for (const [guestPath, hostFile] of libs) {
    const data = await Deno.readFile(hostFile);
    const rel = guestPath.slice(1);
    await Deno.mkdir(`${root}/${rel.slice(0, rel.lastIndexOf("/"))}`, { recursive: true });
    await Deno.writeFile(`${root}/${rel}`, data, { mode: 0o755 });
    add({ kind: "file", path: rel, mode: 0o755, data });
  }
  for (let i = 0; i < modulePaths.length; i++) {
    add({
      kind: "file",
      path: `lib/modules/${modules[i]}.ko`,
      data: await Deno.readFile(modulePaths[i]),
    });
  }
  add({
    kind: "file",
    path: "init",
    mode: 0o755,
    data: new TextEncoder().encode(stage1Script(modules)),
  });
  // Pre-warmed Deno cache (transpiled guest modules) at DENO_DIR, writable in the initramfs.
  const denoDir = guestInitEnv().DENO_DIR;
  if (prewarmEnabled() && await prewarmDenoDir(root)) {
    for (const f of await listTree(`${root}${denoDir}`)) {
      const rel = `${denoDir.slice(1)}/${f}`;
      add({ kind: "file", path: rel, data: await Deno.readFile(`${root}/${rel}`) });
    }
  }
  await Deno.writeFile(`${tmp}/initramfs.cpio`, encodeCpio(entries));
  await makeExt4Image(rt, `${tmp}/runtime.ext4`, { label: "nerdbox-rt", extraBytes: 0 });
}
