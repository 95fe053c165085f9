/**
 * The QEMU backend: runs a VmPlan with qemu-system-x86_64 (microvm, KVM or TCG). It assembles the
 * guest image, builds this run's rootfs disk, starts passt when no network is attached, listens on
 * the channel socket, spawns QEMU in its own process group (inside plan.netns when set), and runs
 * the guest session over the `nerdbox.ctl` port.
 */
import { earlyKillExit, endsBootingVm } from "./early_kill.ts";
import type { VmExit, VmHandle, VmPlan, VmStdio } from "./types.ts";
import { buildGuestConfig, channelHandleOps, GuestChannel } from "./channel.ts";
import { ensureGuestImage, type GuestImage, PROBE_OK_MARKER } from "./guest_image.ts";
import { hostTscKhz } from "./kernel.ts";
import { prepareQemuRootfs } from "./qemu_rootfs.ts";
import { attachVolumes } from "./volumes.ts";
import { type PasstHandle, startPasst } from "../net/passt.ts";
import { spawnInNetns, validateNetnsPath } from "../net/netns.ts";
import { startTcRedirect, type TcRedirect } from "../net/tc_redirect.ts";
import { isHostNetns } from "../net/host_netns.ts";
import { procRef, type RunRecord, sweepDeadRuns, writeRunRecord } from "./run_state.ts";
import type { PortSpec } from "../spec/types.ts";
import { sendVfkitHandshake } from "../../ffi/unix_dgram.ts";
import { type QemuAccel, qemuArgv, type QemuNic } from "./qemu_argv.ts";
import type { GuestNetwork, GuestNetworkReport } from "../guest_protocol.ts";
import { probeSocket } from "../net/probe.ts";
import { networkKey } from "../spec/annotations.ts";

export { kernelCmdline, qemuArgv, qemuOptValue } from "./qemu_argv.ts";
export type { QemuAccel, QemuArgvInput, QemuNetdev, QemuNic } from "./qemu_argv.ts";

/** The QEMU binary (NERDBOX_QEMU overrides). */
export function qemuBinary(): string {
  return Deno.env.get("NERDBOX_QEMU") ?? "qemu-system-x86_64";
}

/** Smallest guest memory that runs Deno on the runtime disk reliably (reference: floor 96). */
export const QEMU_MIN_MEMORY_MIB = 192;
/** How long the guest may take from QEMU start to the workload's start before it is killed. */
export const BOOT_TIMEOUT_MS = { tcg: 120_000, kvm: 30_000 } as const;
/** How long QEMU may take to power off after the workload's exit was reported. */
const SHUTDOWN_GRACE_MS = 10_000;

/** Extra knobs of startQemuVm (tests, bench). */
export interface QemuVmOptions {
  /** Called with each guest init LOG line. */
  onLog?: (line: string) => void;
  /** Called with the guest's network report. */
  onNetwork?: (report: GuestNetworkReport) => void;
  /** Guest DHCP timeout (ms) written to the GuestConfig. */
  dhcpTimeoutMs?: number;
  /** Start passt with --no-dhcp for the default network (tests the DHCP-timeout path). */
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

/** How long after passt's exit QEMU must still run for passt's exit to count as a loss. */
const PASST_LOSS_GRACE_MS = 500;

/**
 * Watches a VM's private passt: passt `-1` exits by itself once QEMU's connection closes, so an
 * exit while QEMU still runs (kill -9, a crash) means the VM lost its network. That is reported
 * through `warn`; the run goes on (the workload may not need the network, and its status is
 * still the run's status).
 */
function watchPasst(passt: PasstHandle, qemuGone: () => boolean, warn: (m: string) => void) {
  passt.exited.then(async (s) => {
    if (qemuGone()) return;
    await new Promise((r) => setTimeout(r, PASST_LOSS_GRACE_MS));
    if (qemuGone()) return;
    const how = s.signal ? `was killed by ${s.signal}` : `exited with status ${s.code}`;
    warn(
      `passt (pid ${passt.pid}), the VM's network provider, ${how} during the run: the VM has ` +
        `no network from now on; the workload keeps running`,
    );
  }).catch(() => {});
}

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

function killGroup(pid: number): void {
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

/** A random locally-used MAC in QEMU's 52:54:00 range. */
export function generateMac(): string {
  const b = crypto.getRandomValues(new Uint8Array(3));
  return ["52", "54", "00", ...Array.from(b, (x) => x.toString(16).padStart(2, "0"))].join(":");
}

/** The last `lines` lines of a file ("" if unreadable). */
export async function fileTail(path: string, lines = 25): Promise<string> {
  const text = await Deno.readTextFile(path).catch(() => "");
  return text.split("\n").filter((l) => l.trim() !== "").slice(-lines).join("\n");
}

function streamTail(stream: ReadableStream<Uint8Array>, max = 4096): () => string {
  let buf = "";
  const dec = new TextDecoder();
  (async () => {
    for await (const c of stream) buf = (buf + dec.decode(c, { stream: true })).slice(-max);
  })().catch(() => {});
  return () => buf.trim();
}

async function acceptWithin(
  listener: Deno.Listener,
  died: Promise<unknown>,
  ms: number,
): Promise<Deno.Conn | undefined> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<undefined>((r) => {
    timer = setTimeout(() => r(undefined), ms);
  });
  try {
    return await Promise.race([listener.accept(), died.then(() => undefined), timeout]);
  } catch {
    return undefined;
  } finally {
    clearTimeout(timer);
  }
}

/** Longest path a `struct sockaddr_un` holds (108 bytes with the NUL). */
const SUN_PATH_MAX = 107;

function checkSocketPath(path: string, what: string): void {
  const n = new TextEncoder().encode(path).length;
  if (n > SUN_PATH_MAX) {
    throw new Error(
      `${what} ${JSON.stringify(path)}: ${n} bytes; UNIX socket paths hold at most ${SUN_PATH_MAX}`,
    );
  }
}

/**
 * True when the default network of a plan in a prepared netns uses the pod interface (tc
 * redirect) rather than a private passt: always, except when a published port asks for a
 * translation only passt can do (a host IP, or a host port other than the guest port), or a
 * test wants passt without DHCP.
 */
export function podMode(
  netns: string | undefined,
  ports: PortSpec[],
  opts: Pick<QemuVmOptions, "passtNoDhcp"> = {},
): boolean {
  if (netns === undefined || opts.passtNoDhcp) return false;
  return ports.every((p) => p.hostIp === undefined && p.hostPort === p.guestPort);
}

/**
 * DNS for a guest on the pod interface (no DHCP there): the netns's own resolv.conf
 * (`/etc/netns/<name>/resolv.conf`, as `ip netns exec` uses) or the host's, without loopback
 * servers the guest cannot reach.
 */
export async function podDns(
  netns: string,
): Promise<{ nameservers: string[]; search: string[]; options: string[] }> {
  const m = /^\/(?:var\/)?run\/netns\/([^/]+)$/.exec(netns);
  const files = [...(m ? [`/etc/netns/${m[1]}/resolv.conf`] : []), "/etc/resolv.conf"];
  let text = "";
  for (const f of files) {
    text = await Deno.readTextFile(f).catch(() => "");
    if (text) break;
  }
  const out = { nameservers: [] as string[], search: [] as string[], options: [] as string[] };
  for (const line of text.split("\n")) {
    const [key, ...vals] = line.trim().split(/\s+/);
    if (key === "nameserver" && vals[0] && /^[0-9a-fA-F.:]+$/.test(vals[0])) {
      if (!/^127\.|^::1$/.test(vals[0])) out.nameservers.push(vals[0]);
    } else if (key === "search" || key === "domain") {
      out.search = vals.filter((v) => /^[A-Za-z0-9.-]+$/.test(v));
    } else if (key === "options") {
      out.options = vals.filter((v) => /^[A-Za-z0-9:_-]+$/.test(v));
    }
  }
  return out;
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

/** Where network `i` of a plan comes from, for messages: its flag or its annotation. */
function networkSource(i: number): string {
  return `network ${i} is --net #${i} or annotation ${networkKey(i)}`;
}

/** Refuses what this backend cannot run, before anything is built or started. */
export async function checkPlan(plan: VmPlan): Promise<void> {
  if (!plan.stateDir.startsWith("/")) {
    throw new Error(`stateDir ${JSON.stringify(plan.stateDir)}: expected an absolute path`);
  }
  checkSocketPath(channelSocketPath(plan.stateDir), "state dir: channel socket");
  if (plan.netns !== undefined) validateNetnsPath(plan.netns, "--netns");
  if (plan.network.kind === "tsi") {
    checkSocketPath(`${plan.stateDir}/passt/passt.sock`, "state dir: passt socket");
    return;
  }
  for (const [i, nic] of plan.network.nics.entries()) {
    const name = `network ${i}`;
    if (nic.vnetHdr) {
      throw new Error(
        `${name}: vnet_hdr=true: QEMU's stream/dgram netdevs carry plain Ethernet frames ` +
          `without a virtio-net header; drop vnet_hdr or use --backend libkrun`,
      );
    }
    checkSocketPath(nic.socket, `${name}: socket`);
    if (nic.mode === "unixgram") {
      checkSocketPath(`${plan.stateDir}/n${i}.sock`, `${name}: state dir: local socket`);
    }
    // QEMU neither reconnects to a stream socket that appears later nor notices that its dgram
    // peer is missing (it sends into the void): the provider must be up, of the right type, now.
    const sock = JSON.stringify(nic.socket);
    const s = await Deno.lstat(nic.socket).catch(() => null);
    if (!s?.isSocket) {
      throw new Error(
        `${name}: socket ${sock}: ${
          !s
            ? "does not exist"
            : s.isSymlink
            ? "is not a UNIX socket (a symlink: give the socket itself)"
            : "is not a UNIX socket"
        }; start the provider first (mode=${nic.mode}; ${networkSource(i)})`,
      );
    }
    const probe = await probeSocket(nic.socket, nic.mode);
    if (!probe.ok) {
      throw new Error(
        `${name}: socket ${sock}: ${probe.message} (mode=${nic.mode}; ${networkSource(i)})`,
      );
    }
  }
}

/**
 * Boots `plan` under QEMU and runs its workload; stdio receives the workload's output. The
 * returned handle's `exited` resolves with the workload's status, or 125 (or a guest-init status)
 * with an error that includes the console tail.
 */
export async function startQemuVm(
  plan: VmPlan,
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
  const closeStdio = async () => {
    await stdio.stdout.close().catch(() => {});
    await stdio.stderr.close().catch(() => {});
  };
  try {
    const stateDir = plan.stateDir;
    await checkPlan(plan);
    // Runs whose owner died (SIGKILL) left their dirs next to ours: clean those first.
    await sweepDeadRuns(stateDir.slice(0, stateDir.lastIndexOf("/")) || "/", stateDir)
      .catch(() => {});
    // The plan's state dir is this backend's to create and remove (VmPlan.stateDir).
    // 0700 whatever the umask; only a private passt (nobody) needs it searchable (0711, below).
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
    const rootfs = await prepareQemuRootfs(plan.rootfs, stateDir, privDir, recordVirtiofsd);
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

    // Networks.
    const nics: QemuNic[] = [];
    let guestNetworks: GuestNetwork[] = [];
    let passt: PasstHandle | undefined;
    let redirect: TcRedirect | undefined;
    // The host's own netns (a host-network pod, `--netns /proc/1/ns/net`) is never taken over:
    // such a VM gets a private passt there instead (docs/kubernetes.md "Host-network pods").
    const hostNet = plan.netns !== undefined && isHostNetns(plan.netns);
    if (plan.network.kind === "tsi" && !hostNet && podMode(plan.netns, plan.network.ports, opts)) {
      // A prepared netns: the VM takes over the pod interface (docs/cni.md "Joining a prepared
      // netns"), so every port the guest serves answers at the pod IP.
      redirect = await startTcRedirect(plan.netns!);
      const r = redirect;
      cleanups.push(() => r.undo());
      record.netns = plan.netns;
      record.tcRedirect = { tap: r.tap, dev: r.pod.name, txqlen: r.pod.txqlen };
      await saveRecord();
      nics.push({ mac: r.pod.mac, netdev: { kind: "tap", ifname: r.tap } });
      guestNetworks = [{
        mac: r.pod.mac,
        dhcp: false,
        addrs: [...r.pod.addrs],
        defaultRoute: true,
        gateway4: r.pod.gateway4,
        mtu: r.pod.mtu,
      }];
    } else if (plan.network.kind === "tsi") {
      // passt runs as nobody and must reach its socket dir inside stateDir.
      await Deno.chmod(stateDir, 0o711);
      passt = await startPasst({
        dir: `${stateDir}/passt`,
        ports: plan.network.ports,
        netns: plan.netns,
        noDhcp: opts.passtNoDhcp,
        // Recorded before anything connects to it: should this process die before QEMU does,
        // the dead-run sweep (and the shim's `delete`) kill passt, which would wait forever.
        onSpawn: async (pid) => {
          const ref = procRef(pid);
          if (ref) record.passt = ref;
          await saveRecord();
        },
      });
      const p = passt;
      cleanups.push(async () => {
        await p.stop();
        await Deno.remove(`${stateDir}/passt`, { recursive: true }).catch(() => {});
      });
      const mac = generateMac();
      nics.push({ mac, netdev: { kind: "stream", path: passt.socket } });
      guestNetworks = [{ mac, dhcp: true, addrs: [], defaultRoute: true }];
    } else {
      for (const [i, nic] of plan.network.nics.entries()) {
        if (nic.mode === "unixstream") {
          nics.push({ mac: nic.mac, netdev: { kind: "stream", path: nic.socket } });
        } else {
          const local = `${stateDir}/n${i}.sock`;
          await Deno.remove(local).catch(() => {}); // QEMU binds it: nothing stale may be there
          cleanups.push(() => Deno.remove(local).catch(() => {}));
          if (nic.vfkit) sendVfkitHandshake(local, nic.socket);
          nics.push({
            mac: nic.mac,
            netdev: { kind: "dgram", localPath: local, remotePath: nic.socket },
          });
        }
      }
      guestNetworks = buildGuestConfig(plan, rootfs.guest).networks;
    }
    const config = buildGuestConfig(plan, rootfs.guest);
    config.networks = guestNetworks;
    if (redirect && !config.dns) config.dns = await podDns(plan.netns!);
    if (opts.dhcpTimeoutMs !== undefined) config.dhcpTimeoutMs = opts.dhcpTimeoutMs;
    if (volumes) config.volumes = volumes.guest;

    // Channel: the host listens, QEMU connects.
    const ctlPath = channelSocketPath(stateDir);
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
      shares: [rootfs.share, volumes?.share.share].filter((x) => x !== undefined),
      channelSocket: ctlPath,
      consoleLog,
      tscKhz: await hostTscKhz(),
      nics,
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
    const qref = procRef(child.pid);
    if (qref) {
      record.qemu = qref;
      await saveRecord().catch(() => {});
    }
    const qemuStderr = streamTail(child.stderr);
    let qemuDone = false;
    const qemuStatus = child.status.then((s) => {
      qemuDone = true;
      return s;
    });
    cleanups.push(async () => {
      if (!qemuDone) killGroup(child.pid);
      await qemuStatus;
    });
    if (passt) {
      watchPasst(passt, () => qemuDone, opts.onWarning ?? stdio.onWarning ?? defaultWarning);
    }

    const failure = async (why: string): Promise<VmExit> => {
      const tail = await fileTail(consoleLog);
      const err = qemuStderr();
      return {
        code: 125,
        error: `${why}${err ? `\nqemu: ${err}` : ""}${
          tail ? `\n--- console (${consoleLog}) ---\n${tail}` : ""
        }`,
      };
    };

    let channel: GuestChannel | undefined;
    let resolveChannel!: (c: GuestChannel | undefined) => void;
    const channelReady = new Promise<GuestChannel | undefined>((r) => (resolveChannel = r));
    let started = false;
    /** A SIGKILL/SIGTERM that arrived before the workload started ended the VM (lib/vm/early_kill.ts). */
    let killedEarly: number | undefined;
    const exited = (async (): Promise<VmExit> => {
      const conn = await acceptWithin(listener, qemuStatus, 30_000);
      if (!conn) {
        resolveChannel(undefined);
        await closeStdio();
        if (!qemuDone) killGroup(child.pid);
        const s = await qemuStatus;
        return await failure(`QEMU exited (status ${s.code}) before connecting the channel`);
      }
      // One connection only: nobody else gets to talk on (or wait in the queue of) the channel.
      try {
        listener.close();
      } catch {
        // closed
      }
      await Deno.remove(ctlPath).catch(() => {});
      channel = new GuestChannel(conn);
      resolveChannel(channel);
      phase("connected");
      const bootTimeout = opts.bootTimeoutMs ??
        (await import("./libkrun.ts")).bootTimeoutOverride() ??
        BOOT_TIMEOUT_MS[accel];
      let timedOut = false;
      const watchdog = setTimeout(() => {
        if (!started) {
          timedOut = true;
          killGroup(child.pid);
        }
      }, bootTimeout);
      const result = await channel.run(config, stdio, {
        onLog: opts.onLog,
        onNetwork: opts.onNetwork,
        onStarted: () => {
          started = true;
          phase("started");
        },
      });
      clearTimeout(watchdog);
      // The guest powers off after reporting; give it a moment, then make sure.
      const grace = setTimeout(() => killGroup(child.pid), SHUTDOWN_GRACE_MS);
      const s = await qemuStatus;
      clearTimeout(grace);
      channel.close();
      if (timedOut) {
        return await failure(
          `the guest did not start the workload within ${bootTimeout / 1000} s (killed)`,
        );
      }
      if (result.error !== undefined) {
        const f = await failure(`${result.error} (QEMU status ${s.code})`);
        return { code: result.code, error: f.error };
      }
      return result;
    })().catch(async (err) => {
      await closeStdio();
      return await failure(`qemu backend: ${(err as Error).message}`);
    }).then(async (r) => {
      await cleanup();
      return killedEarly !== undefined ? earlyKillExit(killedEarly) : r;
    });

    let disposed = false;
    return {
      pid: child.pid,
      exited,
      async signal(signo: number) {
        if (!Number.isInteger(signo) || signo < 1 || signo > 64) {
          throw new Error(`signal ${signo}: expected a signal number 1-64`);
        }
        if (!started && endsBootingVm(signo)) {
          killedEarly ??= signo;
          if (!qemuDone) killGroup(child.pid);
          return;
        }
        const c = await channelReady;
        if (!c) throw new Error("the VM is not running");
        await c.sendSignal(signo);
      },
      // exec'd processes and terminal resizes go over the same channel (lib/vm/channel.ts).
      ...channelHandleOps(channelReady),
      ...(volumes ? { volumes: volumes.share } : {}),
      async dispose() {
        if (disposed) return await exited.then(() => {});
        disposed = true;
        if (!qemuDone) killGroup(child.pid);
        await exited;
      },
    };
  } catch (err) {
    await closeStdio();
    await cleanup();
    throw err;
  }
}
