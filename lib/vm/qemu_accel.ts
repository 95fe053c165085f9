/**
 * QEMU's accelerator and binary: `--accel` resolution (a probe boot decides whether KVM can run
 * the guest here), the stage-1 probe boot itself, and killing a QEMU process group.
 */
import { type GuestImage, PROBE_OK_MARKER } from "./guest_image.ts";
import { hostTscKhz } from "./kernel.ts";
import { type QemuAccel, qemuArgv } from "./qemu_argv.ts";

/** The QEMU binary (NERDBOX_QEMU overrides). */
export function qemuBinary(): string {
  return Deno.env.get("NERDBOX_QEMU") ?? "qemu-system-x86_64";
}

/** Smallest guest memory that runs Deno on the runtime disk reliably (reference: floor 96). */
export const QEMU_MIN_MEMORY_MIB = 192;
/** How long the guest may take from QEMU start to the workload's start before it is killed. */
export const BOOT_TIMEOUT_MS = { tcg: 120_000, kvm: 30_000 } as const;

let kvmProbe: Promise<boolean> | undefined;

/**
 * Resolves `--accel`: `tcg` as is; `kvm` only if /dev/kvm opens; `auto` = kvm when /dev/kvm exists
 * and a probe boot under KVM reaches the stage-1 marker within 20 s (never hangs), else tcg.
 */
export async function resolveAccel(
  choice: "auto" | "kvm" | "tcg",
  image: GuestImage,
): Promise<QemuAccel> {
  if (choice === "tcg") return "tcg";
  let kvmOpens = false;
  try {
    (await Deno.open("/dev/kvm", { read: true, write: true })).close();
    kvmOpens = true;
  } catch {
    kvmOpens = false;
  }
  if (choice === "kvm") {
    if (!kvmOpens) {
      throw new Error(
        "--accel kvm: /dev/kvm is missing or cannot be opened; use --accel tcg or auto",
      );
    }
    return "kvm";
  }
  if (!kvmOpens) return "tcg";
  kvmProbe ??= probeBoot(image, "kvm", 20_000).then((r) => r.ok);
  return (await kvmProbe) ? "kvm" : "tcg";
}

/** Result of a probe boot. */
export interface ProbeResult {
  ok: boolean;
  /** The serial console output. */
  console: string;
  /** Wall time in ms. */
  ms: number;
}

/**
 * Boots the guest kernel with the stage-1 probe word: stage-1 loads the modules, mounts the
 * runtime disk, runs `deno --version`, prints PROBE_OK_MARKER and powers off. Killed at the deadline.
 */
export async function probeBoot(
  image: GuestImage,
  accel: QemuAccel,
  timeoutMs: number,
): Promise<ProbeResult> {
  const dir = await Deno.makeTempDir({ prefix: "nerdbox-probe-" });
  const start = performance.now();
  try {
    const consoleLog = `${dir}/console.log`;
    const args = qemuArgv({
      accel,
      cpus: 1,
      memoryMiB: QEMU_MIN_MEMORY_MIB,
      kernel: image.kernel,
      initramfs: image.initramfs,
      runtimeDisk: image.runtimeDisk,
      consoleLog,
      tscKhz: accel === "tcg" ? await hostTscKhz() : undefined,
      nics: [],
      probe: true,
    });
    const child = new Deno.Command(qemuBinary(), {
      args,
      stdin: "null",
      stdout: "null",
      stderr: "null",
      detached: true,
    }).spawn();
    const timer = setTimeout(() => killGroup(child.pid), timeoutMs);
    await child.status;
    clearTimeout(timer);
    const text = await Deno.readTextFile(consoleLog).catch(() => "");
    return { ok: text.includes(PROBE_OK_MARKER), console: text, ms: performance.now() - start };
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

/** SIGKILLs a process group (QEMU runs detached, as its own group), else the process. */
export function killGroup(pid: number): void {
  try {
    Deno.kill(-pid, "SIGKILL");
  } catch {
    try {
      Deno.kill(pid, "SIGKILL");
    } catch {
      // gone
    }
  }
}
