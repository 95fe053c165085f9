/**
 * The QEMU backend: runs a VmPlan with qemu-system-x86_64 (microvm, KVM or TCG). It realises what
 * the plan decided and decides nothing about the network: it checks the providers are up, makes
 * the state dir, assembles the guest image and this run's rootfs, realises the network
 * (lib/vm/qemu_net.ts), listens on the channel socket, spawns QEMU in its own process group
 * (inside plan.netns when set) and hands over to the process handle (lib/vm/qemu_process.ts).
 * The accelerator and probe boot are lib/vm/qemu_accel.ts, the argv lib/vm/qemu_argv.ts.
 */
import type { VmHandle, VmPlan, VmStdio } from "./types.ts";
import { buildGuestConfig } from "./guest_config.ts";
import { ensureGuestImage } from "./guest_image.ts";
import { hostTscKhz } from "./kernel.ts";
import { prepareQemuRootfs } from "./qemu_rootfs.ts";
import { attachVolumes } from "./volumes.ts";
import { spawnInNetns } from "../net/netns.ts";
import { type RunRecord, sweepDeadRuns, writeRunRecord } from "./run_state.ts";
import { procRef } from "../proc.ts";
import { qemuArgv } from "./qemu_argv.ts";
import type { GuestNetworkReport } from "../guest_protocol.ts";
import { socketPath } from "../spec/socket_path.ts";
import { checkProviders, qemuDefaultNetwork } from "./plan_network.ts";
import { realiseQemuNetwork, watchPasst } from "./qemu_net.ts";
import {
  BOOT_TIMEOUT_MS,
  killGroup,
  QEMU_MIN_MEMORY_MIB,
  qemuBinary,
  resolveAccel,
} from "./qemu_accel.ts";
import { qemuHandle } from "./qemu_process.ts";
import { bootTimeoutOverride } from "./boot_timeout.ts";

export { kernelCmdline, qemuArgv, qemuOptValue } from "./qemu_argv.ts";
export type { QemuAccel, QemuArgvInput, QemuNetdev, QemuNic } from "./qemu_argv.ts";
export {
  BOOT_TIMEOUT_MS,
  probeBoot,
  type ProbeResult,
  QEMU_MIN_MEMORY_MIB,
  qemuBinary,
  resolveAccel,
} from "./qemu_accel.ts";
export { podDns } from "./qemu_net.ts";
export { fileTail } from "./qemu_process.ts";

/** Extra knobs of startQemuVm (tests, bench). */
export interface QemuVmOptions {
  /** Called with each guest init LOG line. */
  onLog?: (line: string) => void;
  /** Called with the guest's network report. */
  onNetwork?: (report: GuestNetworkReport) => void;
  /** Guest DHCP timeout (ms) written to the GuestConfig. */
  dhcpTimeoutMs?: number;
  /** For a hand-built `tsi` plan: plan passt with --no-dhcp (tests the DHCP-timeout path). */
  passtNoDhcp?: boolean;
  /** Overrides BOOT_TIMEOUT_MS (QEMU start → workload started). */
  bootTimeoutMs?: number;
  /** Called as each start-up phase ends, with ms since startQemuVm was called (bench). */
  onPhase?: (phase: string, ms: number) => void;
  /**
   * Called with a problem that does not end the run (default: VmStdio.onWarning, else a line on
   * nerdbox's stderr).
   */
  onWarning?: (message: string) => void;
}

function defaultWarning(message: string): void {
  console.error(`nerdbox: warning: ${message}`);
}

/** The private (0700) dir in a state dir for the sockets only nerdbox and QEMU may reach. */
export function privateSocketDir(stateDir: string): string {
  return `${stateDir}/ctl`;
}

/**
 * The channel socket of a run: in the private dir, so no other local user can connect. `ctl/sock`
 * is as long as the former `ctl.sock`: the state dir keeps its whole `sun_path` budget.
 */
export function channelSocketPath(stateDir: string): string {
  return `${privateSocketDir(stateDir)}/sock`;
}

/**
 * A plan QEMU can realise: planVm's as is; a hand-built one with a `tsi` network (tests, bench)
 * gets the default network the plan would have decided (lib/vm/plan_network.ts).
 */
function qemuPlan(plan: VmPlan, opts: QemuVmOptions): VmPlan {
  if (plan.network.kind !== "tsi") return plan;
  const network = qemuDefaultNetwork(plan.netns, plan.network.ports, plan.stateDir, {
    ...(opts.passtNoDhcp ? { passtNoDhcp: true } : {}),
  });
  return { ...plan, network };
}

/**
 * Boots `plan` under QEMU and runs its workload; stdio receives the workload's output. The
 * returned handle's `exited` resolves with the workload's status, or 125 (or a guest-init status)
 * with an error that includes the console tail.
 */
export async function startQemuVm(
  input: VmPlan,
  stdio: VmStdio,
  opts: QemuVmOptions = {},
): Promise<VmHandle> {
  const t0 = performance.now();
  const phase = (name: string) => opts.onPhase?.(name, performance.now() - t0);
  const cleanups: Array<() => Promise<void> | void> = [];
  const cleanup = async () => {
    while (cleanups.length > 0) {
      try {
        await cleanups.pop()!();
      } catch {
        // best effort
      }
    }
  };
  try {
    const stateDir = input.stateDir;
    if (!stateDir.startsWith("/")) {
      throw new Error(`stateDir ${JSON.stringify(stateDir)}: expected an absolute path`);
    }
    const ctlPath = socketPath(channelSocketPath(stateDir), "state dir: channel socket");
    const plan = qemuPlan(input, opts);
    // QEMU neither reconnects to a stream socket that appears later nor notices that its dgram
    // peer is missing: the providers must be up, of the right type, now.
    if (plan.network.kind === "nics") await checkProviders(plan.network.nics);
    // Runs whose owner died (SIGKILL) left their dirs next to ours: clean those first.
    await sweepDeadRuns(stateDir.slice(0, stateDir.lastIndexOf("/")) || "/", stateDir)
      .catch(() => {});
    // The plan's state dir is this backend's to create and remove (VmPlan.stateDir).
    // 0700 whatever the umask; only a private passt (nobody) needs it searchable (0711).
    await Deno.mkdir(stateDir, { recursive: true, mode: 0o700 });
    cleanups.push(() => Deno.remove(stateDir, { recursive: true }).catch(() => {}));
    await Deno.chmod(stateDir, 0o700);
    const record: RunRecord = { version: 1, owner: procRef(Deno.pid)! };
    const saveRecord = () => writeRunRecord(stateDir, record);
    await saveRecord();
    // Sockets only nerdbox and QEMU may reach (the channel): in a 0700 dir, so no other local user
    // can connect even while the socket file itself has the umask's mode.
    const privDir = privateSocketDir(stateDir);
    await Deno.mkdir(privDir, { recursive: true, mode: 0o700 });
    await Deno.chmod(privDir, 0o700);

    const image = await ensureGuestImage();
    phase("image");
    const accel = await resolveAccel(plan.accel ?? "auto", image);
    // The rootfs directory is shared (virtio-fs), or copied to ext4 where sharing cannot work.
    const recordVirtiofsd = async (pid: number) => {
      const ref = procRef(pid);
      if (ref) (record.virtiofsd ??= []).push(ref);
      await saveRecord();
    };
    const rootfs = await prepareQemuRootfs(plan, stateDir, privDir, recordVirtiofsd);
    phase("rootfs");
    if (rootfs.share) {
      const share = rootfs.share;
      cleanups.push(() => share.stop());
    }
    // Host bind mounts: the VM's volume share (lib/vm/volumes.ts).
    const volumes = await attachVolumes(plan, privDir, recordVirtiofsd);
    if (volumes) cleanups.push(() => volumes.share.stop());
    if (rootfs.disk) {
      const disk = rootfs.disk;
      cleanups.push(() => Deno.remove(disk).catch(() => {}));
    }

    const net = await realiseQemuNetwork(plan.network, {
      stateDir,
      ...(plan.netns !== undefined ? { netns: plan.netns } : {}),
      cleanups,
      record,
      saveRecord,
    });
    // The guest config, built once for this run.
    const config = buildGuestConfig(plan, rootfs.guest);
    if (net.guestNetworks) config.networks = net.guestNetworks;
    if (net.dns && !config.dns) config.dns = net.dns;
    if (opts.dhcpTimeoutMs !== undefined) config.dhcpTimeoutMs = opts.dhcpTimeoutMs;
    if (volumes) config.volumes = volumes.guest;

    // Channel: the host listens, QEMU connects.
    await Deno.remove(ctlPath).catch(() => {});
    const listener = Deno.listen({ transport: "unix", path: ctlPath });
    await Deno.chmod(ctlPath, 0o600);
    cleanups.push(async () => {
      try {
        listener.close();
      } catch {
        // closed
      }
      await Deno.remove(ctlPath).catch(() => {});
    });

    const consoleLog = `${stateDir}/console.log`;
    const args = qemuArgv({
      accel,
      cpus: plan.cpus,
      memoryMiB: Math.max(plan.memoryMiB, QEMU_MIN_MEMORY_MIB),
      kernel: image.kernel,
      initramfs: image.initramfs,
      runtimeDisk: image.runtimeDisk,
      rootfsDisk: rootfs.disk,
      layerDisks: rootfs.layers,
      shares: [rootfs.share, volumes?.share.share].filter((x) => x !== undefined),
      channelSocket: ctlPath,
      consoleLog,
      tscKhz: await hostTscKhz(),
      nics: net.nics,
    });
    const cmdOpts: Deno.CommandOptions = {
      args,
      stdin: "null",
      stdout: "null",
      stderr: "piped",
      detached: true,
    };
    const bin = qemuBinary();
    let child: Deno.ChildProcess;
    try {
      child = plan.netns
        ? spawnInNetns(plan.netns, bin, cmdOpts)
        : new Deno.Command(bin, cmdOpts).spawn();
    } catch (err) {
      throw new Error(
        `cannot run ${bin} (apt-get install qemu-system-x86): ${(err as Error).message}`,
      );
    }
    phase("spawned");
    const { handle, qemuDone } = qemuHandle({
      child,
      listener,
      channelSocket: ctlPath,
      consoleLog,
      config,
      stdio,
      bootTimeoutMs: opts.bootTimeoutMs ?? bootTimeoutOverride() ?? BOOT_TIMEOUT_MS[accel],
      cleanup,
      phase,
      ...(opts.onLog ? { onLog: opts.onLog } : {}),
      ...(opts.onNetwork ? { onNetwork: opts.onNetwork } : {}),
      ...(volumes ? { volumes: volumes.share } : {}),
    });
    cleanups.push(async () => {
      if (!qemuDone()) killGroup(child.pid);
      await child.status;
    });
    if (net.passt) {
      watchPasst(net.passt, qemuDone, opts.onWarning ?? stdio.onWarning ?? defaultWarning);
    }
    const qref = procRef(child.pid);
    if (qref) {
      record.qemu = qref;
      await saveRecord().catch(() => {});
    }
    return handle;
  } catch (err) {
    await stdio.stdout.close().catch(() => {});
    await stdio.stderr.close().catch(() => {});
    await cleanup();
    throw err;
  }
}
