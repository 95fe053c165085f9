/**
 * The nested test rig: boots ONE L1 Linux under QEMU TCG with an emulated AMD SVM CPU
 * (`-cpu max`), where `kvm_amd` gives a /dev/kvm that runs real libkrun guests. L1's root is this
 * host's `/` over read-only virtio-9p with a tmpfs overlay on top (so L1 sees this checkout, Deno,
 * libkrun, passt, containerd exactly as installed, and writes nothing back); a second, writable 9p
 * share (`/nested-io` in L1) carries the results and a persistent NERDBOX_CACHE_DIR. Recipe and
 * pitfalls: docs/libkrun.md "Nested test rig".
 */
import { type CpioEntry, encodeCpio, parentDirs } from "../../lib/vm/initramfs.ts";
import { BUSYBOX } from "../../lib/vm/busybox_rootfs.ts";
import {
  findNestedKernel,
  NESTED_CACHE_DIR,
  type NestedKernel,
} from "../../scripts/setup_nested.ts";
import { busyProcesses } from "../helpers/procs.ts";

/** Modules stage-1 loads, in order, to reach the 9p root and its overlay. */
export const STAGE1_MODULES = [
  "kernel/drivers/virtio/virtio_ring",
  "kernel/drivers/virtio/virtio",
  "kernel/drivers/virtio/virtio_pci_modern_dev",
  "kernel/drivers/virtio/virtio_pci_legacy_dev",
  "kernel/drivers/virtio/virtio_pci",
  "kernel/fs/netfs/netfs",
  "kernel/fs/fscache/fscache",
  "kernel/net/9p/9pnet",
  "kernel/net/9p/9pnet_virtio",
  "kernel/fs/9p/9p",
  "kernel/fs/overlayfs/overlay",
];

/** Where the writable share is mounted inside L1. */
export const L1_IO = "/nested-io";
/** The checkout, as L1 sees it (the same path as on the host). */
export const CHECKOUT = new URL("../../", import.meta.url).pathname.replace(/\/$/, "");

/** Options of runInL1. */
export interface L1Options {
  /** Shell commands run by /bin/sh inside L1 once /dev/kvm is there (cwd: the checkout). */
  script: string;
  /** Host dir for this run's results (must be inside NESTED_CACHE_DIR; created fresh). */
  runDir: string;
  /** Extra environment for the script. */
  env?: Record<string, string>;
  /** Whole L1 life, boot to power-off (default 25 min). */
  timeoutMs?: number;
  /** L1 memory in MiB (default 5120). */
  memoryMiB?: number;
  /** Called with each console line (default: printed with an `l1| ` prefix). */
  onLine?: (line: string) => void;
  /**
   * Kill L1 as wedged when its console shows nothing but kernel messages for this long, or when
   * its kernel reports a soft lockup of at least a minute (default 10 min).
   */
  stallMs?: number;
}

/** How an L1 run ended. */
export interface L1Result {
  /** L1 loaded kvm_amd and /dev/kvm opened (written by L1 into `<runDir>/kvm`). */
  kvm: boolean;
  /** The script's exit status, undefined when it never finished. */
  scriptCode?: number;
  /** QEMU was killed at the timeout. */
  timedOut: boolean;
  /** Why QEMU was killed as wedged (a soft lockup, or no progress), if it was. */
  wedged?: string;
  /** The whole serial console (L1 kernel + stage-1/2 + the script's output). */
  console: string;
  /** Wall time from QEMU start to exit. */
  wallMs: number;
}

function shellQuote(s: string): string {
  return `'${s.replaceAll("'", `'"'"'`)}'`;
}

/** The busybox stage-1 `/init`: modules, 9p root + tmpfs overlay, io share, switch_root. */
export function stage1Init(modules: string[], runRel: string): string {
  return [
    "#!/bin/busybox sh",
    "B=/bin/busybox",
    "$B mount -t devtmpfs devtmpfs /dev",
    "$B mount -t proc proc /proc",
    ...modules.map((m) => `$B insmod /mods/${m}.ko || echo "l1 stage-1: insmod ${m} failed"`),
    "$B mkdir -p /lower /upper /newroot",
    "$B mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose hostroot /lower" +
    ' || { echo "l1 stage-1: cannot mount the host root"; $B poweroff -f; }',
    "$B mount -t tmpfs -o mode=755 tmpfs /upper",
    "$B mkdir -p /upper/u /upper/w",
    "$B mount -t overlay overlay -o lowerdir=/lower,upperdir=/upper/u,workdir=/upper/w /newroot" +
    ' || { echo "l1 stage-1: cannot mount the overlay"; $B poweroff -f; }',
    `$B mkdir -p /newroot${L1_IO}`,
    `$B mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 nestedio /newroot${L1_IO}` +
    ' || { echo "l1 stage-1: cannot mount the io share"; $B poweroff -f; }',
    "$B mount --move /dev /newroot/dev",
    "$B mount --move /proc /newroot/proc",
    `exec $B switch_root /newroot /bin/sh ${L1_IO}/${runRel}/stage2.sh`,
    "",
  ].join("\n");
}

/** Stage 2 (PID 1 in L1's overlay root): mounts, kvm_amd, a dummy default route, the script. */
export function stage2Script(
  kernel: NestedKernel,
  runRel: string,
  script: string,
  env: Record<string, string>,
): string {
  const io = `${L1_IO}/${runRel}`;
  const exports = Object.entries(env).map(([k, v]) => {
    if (!/^[A-Z_][A-Z0-9_]*$/.test(k)) throw new Error(`l1: bad env name ${k}`);
    return `export ${k}=${shellQuote(v)}`;
  });
  return [
    "set -u",
    "export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root",
    "off() { sync; echo o > /proc/sysrq-trigger; sleep 60; }",
    "mount -t sysfs sysfs /sys",
    "mount -t cgroup2 cgroup2 /sys/fs/cgroup",
    "mount -t tmpfs -o mode=755 tmpfs /run",
    "mount -t tmpfs -o mode=1777 tmpfs /tmp",
    "mkdir -p /dev/pts /dev/shm /run/netns",
    "mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts",
    "mount -t tmpfs tmpfs /dev/shm",
    `mkdir -p /lib/modules/${kernel.release}`,
    `mount --bind ${shellQuote(kernel.modulesDir)} /lib/modules/${kernel.release}`,
    // containerd's overlayfs snapshots cannot stack on L1's overlay root: /var/lib is fresh
    // (after the bind above, whose source may live under /var/lib).
    "mount -t tmpfs -o mode=755 tmpfs /var/lib",
    "hostname nerdbox-l1",
    "ip link set lo up",
    // passt needs a default route to start; a dummy NIC gives one without any real network.
    "modprobe dummy && ip link add nbl1 type dummy && ip addr add 10.0.2.15/24 dev nbl1 &&",
    "  ip link set nbl1 up && ip route add default via 10.0.2.2 dev nbl1",
    "modprobe kvm_amd",
    "if ! [ -c /dev/kvm ] || ! : 2>/dev/null </dev/kvm; then",
    '  echo "l1: FAILED: no usable /dev/kvm after modprobe kvm_amd"; dmesg | tail -20; off',
    "fi",
    `echo "$(cat /sys/module/kvm_amd/parameters/nested 2>/dev/null)" > ${io}/kvm`,
    'echo "l1: /dev/kvm ready (kvm_amd nested=$(cat /sys/module/kvm_amd/parameters/nested))"',
    ...exports,
    `cd ${shellQuote(CHECKOUT)}`,
    `( ${script}`,
    `  echo $? > ${io}/rc ) 2>&1 | tee ${io}/inner.log`,
    "off",
    "",
  ].join("\n");
}

async function buildInitramfs(kernel: NestedKernel, path: string, runRel: string): Promise<void> {
  const have = new Set<string>();
  const entries: CpioEntry[] = [];
  const add = (e: CpioEntry) => {
    entries.push(...parentDirs(e.path, have), e);
    have.add(e.path);
  };
  for (const d of ["dev", "proc", "bin", "mods"]) add({ kind: "dir", path: d });
  add({ kind: "chardev", path: "dev/console", major: 5, minor: 1 });
  add({ kind: "file", path: "bin/busybox", mode: 0o755, data: await Deno.readFile(BUSYBOX) });
  for (const m of STAGE1_MODULES) {
    const data = await Deno.readFile(`${kernel.modulesDir}/${m}.ko`);
    add({ kind: "file", path: `mods/${m}.ko`, data });
  }
  const init = new TextEncoder().encode(stage1Init(STAGE1_MODULES, runRel));
  add({ kind: "file", path: "init", mode: 0o755, data: init });
  await Deno.writeFile(path, encodeCpio(entries));
}

/** QEMU's argv for L1 (TCG, `-cpu max` for SVM+NPT, two 9p shares, serial on stdout). */
export function l1QemuArgs(kernel: NestedKernel, initrd: string, memoryMiB: number): string[] {
  return [
    "-accel",
    "tcg,thread=multi",
    "-cpu",
    "max",
    "-smp",
    "2",
    "-m",
    `${memoryMiB}M`,
    "-nographic",
    "-monitor",
    "none",
    "-serial",
    "stdio",
    "-no-reboot",
    "-nic",
    "none",
    "-kernel",
    kernel.vmlinuz,
    "-initrd",
    initrd,
    "-append",
    "console=ttyS0 quiet panic=-1",
    "-virtfs",
    "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
    "-virtfs",
    `local,path=${NESTED_CACHE_DIR},mount_tag=nestedio,security_model=none,multidevs=remap`,
  ]; // deno-fmt-ignore
}

/** True for a line of L1's kernel log (`[  12.345678] …`), which says nothing about progress. */
export function isKernelLine(line: string): boolean {
  return /^\s*\[\s*\d+\.\d+\]/.test(line);
}

/** A soft lockup this long is a wedge; shorter ones (a starved TCG vCPU) can pass. */
export const WEDGE_LOCKUP_S = 150;

/**
 * The wedge a kernel line reports, if any: a soft lockup of ≥ WEDGE_LOCKUP_S (seen under TCG
 * when the nested guest's vCPU and kvm-pit threads spin; L1 did not recover from one of 809 s).
 * The kernel repeats the report while the CPU stays stuck, with the time so far.
 */
export function l1Wedge(line: string): string | undefined {
  const m = line.match(/soft lockup - CPU#\d+ stuck for (\d+)s! \[([^\]]*)\]/);
  if (!m || Number(m[1]) < WEDGE_LOCKUP_S) return undefined;
  return `L1 kernel: soft lockup, CPU stuck for ${m[1]} s in ${m[2]}`;
}

/** Boots L1, runs `opts.script` there, powers off; never throws for what happens inside L1. */
export async function runInL1(opts: L1Options): Promise<L1Result> {
  const kernel = findNestedKernel();
  if (!kernel) {
    throw new Error(
      `nested rig: no unpacked L1 kernel under ${NESTED_CACHE_DIR}/kernel: run deno task setup`,
    );
  }
  if (!opts.runDir.startsWith(`${NESTED_CACHE_DIR}/`)) {
    throw new Error(`nested rig: runDir ${opts.runDir} is not inside ${NESTED_CACHE_DIR}`);
  }
  const runRel = opts.runDir.slice(NESTED_CACHE_DIR.length + 1);
  await Deno.remove(opts.runDir, { recursive: true }).catch(() => {});
  await Deno.mkdir(opts.runDir, { recursive: true });
  const initrd = `${opts.runDir}/initrd.cpio`;
  await buildInitramfs(kernel, initrd, runRel);
  await Deno.writeTextFile(
    `${opts.runDir}/stage2.sh`,
    stage2Script(kernel, runRel, opts.script, opts.env ?? {}),
  );
  const onLine = opts.onLine ?? ((l: string) => console.log(`l1| ${l}`));
  const started = performance.now();
  const child = new Deno.Command("qemu-system-x86_64", {
    args: l1QemuArgs(kernel, initrd, opts.memoryMiB ?? 5120),
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    try {
      child.kill("SIGKILL");
    } catch { /* gone */ }
  }, opts.timeoutMs ?? 25 * 60_000);
  let wedged: string | undefined;
  const killWedged = (why: string) => {
    if (wedged !== undefined) return;
    wedged = why;
    try {
      child.kill("SIGKILL");
    } catch { /* gone */ }
  };
  const stallMs = opts.stallMs ?? 10 * 60_000;
  let stall = setTimeout(() => killWedged(`no progress for ${stallMs / 1000} s`), stallMs);
  const seen = (line: string) => {
    const stuck = l1Wedge(line);
    if (stuck !== undefined) killWedged(stuck);
    if (isKernelLine(line)) return;
    clearTimeout(stall);
    stall = setTimeout(() => killWedged(`no progress for ${stallMs / 1000} s`), stallMs);
  };
  let consoleText = "";
  const pump = async (s: ReadableStream<Uint8Array>) => {
    let partial = "";
    for await (const chunk of s.pipeThrough(new TextDecoderStream())) {
      consoleText += chunk;
      const lines = (partial + chunk).split(/\r?\n/);
      partial = lines.pop() ?? "";
      for (const l of lines) {
        onLine(l);
        seen(l);
      }
    }
    if (partial) onLine(partial);
  };
  await Promise.all([pump(child.stdout), pump(child.stderr), child.status]);
  clearTimeout(timer);
  clearTimeout(stall);
  const wallMs = performance.now() - started;
  const read = (f: string) => Deno.readTextFile(`${opts.runDir}/${f}`).catch(() => undefined);
  const rc = await read("rc");
  return {
    kvm: (await read("kvm")) !== undefined,
    ...(rc !== undefined ? { scriptCode: Number(rc.trim()) } : {}),
    timedOut,
    ...(wedged !== undefined ? { wedged } : {}),
    console: consoleText,
    wallMs,
  };
}

/** Other processes keeping a host core at least half busy, as one line ("" when none). */
export async function hostLoad(): Promise<string> {
  const busy = await busyProcesses(3000, 50);
  return busy.map((p) => `${p.pid} ${p.cpu}% ${p.cmdline || "(kernel thread)"}`).join("; ");
}

/**
 * Waits until no other process keeps a host core busy, at most `maxMs`, saying who does: L1
 * under TCG on a starved host has wedged in soft lockups.
 */
export async function waitForQuietHost(maxMs = 180_000): Promise<void> {
  const deadline = Date.now() + maxMs;
  for (;;) {
    const load = await hostLoad();
    if (load === "") return;
    if (Date.now() >= deadline) {
      console.log(`nested: host still busy, booting L1 anyway: ${load}`);
      return;
    }
    console.log(`nested: host busy, waiting before L1 boots: ${load}`);
    await new Promise((r) => setTimeout(r, 10_000));
  }
}
