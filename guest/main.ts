/**
 * nerdbox guest init: PID 1 under QEMU (after stage-1), a child of /init.krun under libkrun, or
 * a dev-mode process on the host (`--channel SOCK [--config FILE] [--work-dir DIR]`). Says HELLO,
 * takes CONFIG, configures the network, mounts the rootfs, chroots, runs the workload, reports
 * its exit status and ends the VM. All modules are imported statically: nothing loads after chroot.
 * PID 1's state (channel, process table: guest/process_table.ts) is module-level and shared by
 * the frame router, exec, the host-gone path and the shutdown; QUERY answers: guest/queries.ts.
 */
import * as c from "./libc.ts";
import { Channel } from "./channel.ts";
import { ConfigError, type GuestSetup, parseConfig, parseProcess } from "./config.ts";
import {
  ensureBaseMounts,
  installEtcFiles,
  mountPoints,
  mountRootfs,
  prepareRoot,
  RootfsError,
  setWorkDir,
} from "./mounts.ts";
import { configureNetworks, NetworkError, type NetworkState, releaseAll } from "./network.ts";
import { hostsFile, mergeDns, resolvConf } from "./resolv.ts";
import { startReaper } from "./reaper.ts";
import {
  ExecError,
  loadTerminalSupport,
  openSessionHelper,
  type Running,
  startProcess,
} from "./workload.ts";
import { type CrunExec, crunFailure, prepareCrunRun } from "./oci_runtime.ts";
import { bindVolumes, mountVolumeShare } from "./volumes.ts";
import { parseExecTarget, PodContainers } from "./pod_containers.ts";
import {
  decodeJson,
  type Frame,
  GUEST_EXIT,
  GUEST_PROTOCOL_VERSION,
  GUEST_WORKLOAD_ID,
  type GuestError,
  type GuestErrorKind,
  type GuestReply,
  MsgType,
} from "../lib/guest_protocol.ts";
import { OomKills } from "./cgroup_stats.ts";
import { DialError, dialLoopback } from "./loopback.ts";
import { answerQuery } from "./queries.ts";
import { ProcessTable } from "./process_table.ts";
import { parseFlags } from "./flags.ts";

const KRUN_EXIT_CODE_IOCTL = 0x7602;
/** Signals init forwards to the workload when it receives them itself. */
const FORWARDED: Array<[Deno.Signal, number]> = [
  ["SIGTERM", 15],
  ["SIGINT", 2],
  ["SIGHUP", 1],
  ["SIGQUIT", 3],
  ["SIGUSR1", 10],
  ["SIGUSR2", 12],
];

/** Phase marks (ms since the Deno process started) for the timing LOG line. */
const marks: Array<[string, number]> = [["modules", performance.now()]];
const mark = (phase: string) => marks.push([phase, performance.now()]);
let opts: ReturnType<typeof parseFlags> = {};
try {
  opts = parseFlags(Deno.args);
} catch (err) {
  console.error(`nerdbox-init: ${err instanceof Error ? err.message : err}`);
  Deno.exit(GUEST_EXIT.config);
}

const pid1 = Deno.pid === 1;
const rootIsVirtiofs = mountPoints().get("/") === "virtiofs";
let channel: Channel | undefined;
let krunFd = -1;
let net: NetworkState | undefined;
const procs = new ProcessTable();
const owned = new Set<number>();
let finishing = false;
/** Resolves once init is chrooted into the container: EXEC requests wait for it. */
let markReady = () => {};
/** Set when CONFIG carries an OCI spec: crun runs the workload in this root (no chroot). */
let oci: { spec: Record<string, unknown>; root: string } | undefined;
/** The VM's containers (crun mode only): the first one and those EXEC frames create. */
let pod: PodContainers | undefined;
/** crun's container id for the workload. */
const OCI_ID = GUEST_WORKLOAD_ID;
/** Tells OOM kills from other SIGKILLs of containers (crun mode). */
let oomKills: OomKills | undefined;
const ready = new Promise<void>((r) => (markReady = r));

/** Logs to the console (VM log) and, when up, as a LOG frame. */
function log(line: string): void {
  console.error(`nerdbox-init: ${line}`);
  channel?.send(MsgType.LOG, 0, new TextEncoder().encode(line)).catch(() => {});
}

/** Ends the VM (or the dev-mode process) with `code` after everything queued is written. */
async function finish(code: number): Promise<never> {
  finishing = true;
  if (net) await releaseAll(net.clients).catch(() => {});
  if (channel) {
    await Promise.race([channel.flush().catch(() => {}), new Promise((r) => setTimeout(r, 5000))]);
  }
  if (krunFd >= 0) {
    try {
      c.ioctlInt(krunFd, KRUN_EXIT_CODE_IOCTL, code);
    } catch (err) {
      console.error(`nerdbox-init: reporting exit code to libkrun failed: ${err}`);
    }
  }
  if (pid1) {
    try {
      c.powerOff();
    } catch (err) {
      console.error(`nerdbox-init: power off failed: ${err}`);
    }
  }
  Deno.exit(code);
}

/** Reports a setup failure (ERROR frame + console) and ends with its status. */
async function fail(kind: GuestErrorKind, message: string, code?: number): Promise<never> {
  console.error(`nerdbox-init: ERROR ${kind}: ${message}`);
  const err: GuestError = { kind, message, ...(code !== undefined ? { code } : {}) };
  await channel?.sendJson(MsgType.ERROR, 0, err).catch(() => {});
  return finish(code ?? GUEST_EXIT[kind]);
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function sink() {
  return {
    output: (proc: number, fd: 1 | 2, data: Uint8Array) =>
      channel!.send(fd === 1 ? MsgType.STDOUT : MsgType.STDERR, proc, data).catch(() => {}),
  };
}

async function startExec(f: Frame): Promise<void> {
  await ready;
  try {
    const payload = decodeJson<Record<string, unknown>>(f.payload);
    let proc = parseProcess(payload, `exec[${f.proc}].`);
    const target = parseExecTarget(payload, `exec[${f.proc}].`);
    let crunExec: CrunExec | undefined;
    if (proc.terminal) await loadTerminalSupport(); // after chroot: node built-ins need no files
    if ((target.container || target.in || target.guest) && !pod) {
      throw new ExecError(127, "exec: this VM's workload runs without crun: no containers to add");
    }
    if (target.container) {
      await pod!.waitCreated(OCI_ID); // the sandbox's namespaces are joined (guest/oci_runtime.ts)
      proc = pod!.create(target.container, proc.terminal);
    } else if (pod && !target.guest && target.dial === undefined) {
      await pod.waitCreated(target.in ?? OCI_ID);
      crunExec = pod.exec(target.in ?? OCI_ID, f.proc, proc);
      proc = crunExec.process;
    }
    let r: Running;
    try {
      r = target.dial !== undefined
        ? await dialLoopback(f.proc, target.dial, sink().output)
        : startProcess(f.proc, proc, sink(), owned);
      if (target.container) r = pod!.signalVia(target.container.id, r);
      else if (crunExec) r = pod!.signalExec(crunExec, r);
    } catch (err) {
      if (target.container) pod!.release(target.container.id);
      throw err;
    }
    procs.adopt(r);
    await channel!.sendJson(MsgType.STARTED, f.proc, { pid: r.pid });
    const code = await r.done;
    const oomKilled = target.container !== undefined && oomKills?.killed(code) === true;
    const failed = target.container && code !== 0 && pod!.crunFailure(target.container.id);
    if (failed) {
      log(`exec ${f.proc}: crun: ${failed}`);
      await channel!.sendJson(MsgType.ERROR, f.proc, { kind: "exec", message: `crun: ${failed}` });
    }
    if (target.container) pod!.release(target.container.id);
    procs.delete(f.proc);
    await channel!.sendJson(MsgType.EXIT, f.proc, { code, ...(oomKilled ? { oomKilled } : {}) });
  } catch (err) {
    const code = err instanceof ExecError || err instanceof DialError ? err.code : 127;
    const kind: GuestErrorKind = err instanceof ConfigError ? "config" : "exec";
    if (!(err instanceof DialError)) log(`exec ${f.proc}: ${errorText(err)}`);
    await channel!.sendJson(MsgType.ERROR, f.proc, { kind, message: errorText(err), code });
    await channel!.sendJson(MsgType.EXIT, f.proc, { code });
  }
}

/** Answers a QUERY (guest/queries.ts) with a REPLY of the same id. */
async function answer(f: Frame): Promise<void> {
  let reply: GuestReply;
  try {
    reply = await answerQuery(decodeJson<unknown>(f.payload), pod);
  } catch (err) {
    reply = { error: errorText(err) };
  }
  await channel!.sendJson(MsgType.REPLY, f.proc, reply).catch(() => {});
}

/** Reads host frames; resolves the first CONFIG payload through `onConfig`. */
async function readLoop(onConfig: (text: string) => void): Promise<void> {
  let configured = false;
  try {
    for await (const f of channel!.frames()) {
      if (f.type === MsgType.CONFIG) {
        if (configured) log("ignoring a second CONFIG");
        else onConfig(new TextDecoder().decode(f.payload));
        configured = true;
      } else if (f.type === MsgType.EXEC) {
        void startExec(f);
      } else if (f.type === MsgType.QUERY) {
        void answer(f);
      } else {
        procs.deliver(f);
      }
    }
    if (!finishing) await hostGone("the host closed the channel");
  } catch (err) {
    if (!finishing) await hostGone(`channel read failed: ${errorText(err)}`);
  }
}

/** Exit status when the host went away (nobody reads it: the host is gone). */
const HOST_GONE_EXIT = 137;

/**
 * The host end of the channel is gone (nerdbox or the shim was killed; on the virtio port the
 * read returns EOF once QEMU's chardev peer closes): nothing can ever be reported again, so kill
 * every process and power off, which ends QEMU (and with it passt). Never writes to the channel:
 * a virtio port whose host is disconnected blocks writers.
 */
async function hostGone(why: string): Promise<void> {
  finishing = true;
  console.error(`nerdbox-init: ${why}: the host is gone; killing the workload and powering off`);
  if (pid1) {
    try {
      c.kill(-1, 9); // from PID 1: every process but init itself
    } catch { /* nothing left */ }
  } else {
    for (const p of procs.values()) {
      try {
        p.signal(9);
      } catch { /* gone */ }
    }
  }
  if (net) {
    await Promise.race([
      releaseAll(net.clients).catch(() => {}),
      new Promise((r) => setTimeout(r, 1000)),
    ]);
  }
  if (pid1) {
    try {
      c.powerOff();
    } catch (err) {
      console.error(`nerdbox-init: power off failed: ${err}`);
    }
  }
  Deno.exit(HOST_GONE_EXIT);
}

/** Signals init received before the workload existed; delivered right after it starts. */
const signalsBeforeStart: number[] = [];

/** Installs the listeners that forward signals sent to init to the workload. */
function forwardSignals(): void {
  for (const [name, signo] of FORWARDED) {
    try {
      Deno.addSignalListener(name, () => {
        const w = procs.get(0);
        if (w) w.signal(signo);
        else if (!finishing) signalsBeforeStart.push(signo);
      });
    } catch { /* not installable here */ }
  }
}

async function main(): Promise<never> {
  c.libc(); // before chroot: the library path is in this root
  c.cloexecAbove2();
  if (!pid1) {
    try {
      c.setChildSubreaper();
    } catch (err) {
      console.error(`nerdbox-init: ${errorText(err)}`);
    }
  }
  forwardSignals();
  for (const m of ensureBaseMounts(log)) console.error(`nerdbox-init: mounted ${m}`);
  if (opts["work-dir"]) setWorkDir(opts["work-dir"]);
  mark("mounts");

  try {
    channel = opts.channel
      ? await Channel.connectUnix(opts.channel)
      : await Channel.openVirtioPort();
  } catch (err) {
    return fail("config", `no control channel: ${errorText(err)}`);
  }
  const configText = new Promise<string>((resolve) => {
    void readLoop(resolve);
    if (opts.config) resolve(Deno.readTextFileSync(opts.config));
  });
  mark("channel");
  await channel.sendJson(MsgType.HELLO, 0, { version: GUEST_PROTOCOL_VERSION });

  let cfg: GuestSetup;
  try {
    cfg = parseConfig(await configText);
  } catch (err) {
    return fail("config", errorText(err));
  }
  mark("config");

  if (cfg.hostname) {
    try {
      c.sethostname(cfg.hostname);
    } catch (err) {
      log(`sethostname ${cfg.hostname}: ${errorText(err)}`);
    }
  }

  try {
    net = await configureNetworks(cfg.networks, {
      hostname: cfg.hostname || undefined,
      dhcpTimeoutMs: cfg.dhcpTimeoutMs,
      log,
    });
  } catch (err) {
    if (err instanceof NetworkError) return fail(err.kind, err.message);
    return fail("netlink", errorText(err));
  }
  const dns = mergeDns(cfg.dns, { nameservers: net.dhcpNameservers, domains: net.dhcpDomains });
  let resolvText: string;
  try {
    resolvText = resolvConf(dns);
  } catch (err) {
    return fail("config", errorText(err));
  }
  net.report.nameservers = dns.nameservers;
  await channel.sendJson(MsgType.NETWORK, 0, net.report);
  mark("network");

  try {
    const root = mountRootfs(cfg.rootfs);
    if (cfg.volumes) mountVolumeShare(cfg.volumes);
    if (cfg.oci) { // crun mounts what the spec asks for
      oci = { spec: cfg.oci, root };
      pod = new PodContainers(root.slice(0, root.lastIndexOf("/")), log);
      pod.adopt(OCI_ID, cfg.oci, root);
      oomKills = new OomKills();
    } else prepareRoot(root);
    installEtcFiles(root, {
      "resolv.conf": resolvText,
      hosts: hostsFile(cfg.hostname || "localhost", net.firstAddr),
      hostname: `${cfg.hostname || "localhost"}\n`,
    });
    if (cfg.volumes && !oci) bindVolumes(root, cfg.volumes.mounts);
    if (rootIsVirtiofs) krunFd = c.open("/", c.O.RDONLY | c.O.CLOEXEC);
    if (cfg.process.terminal) await loadTerminalSupport();
    openSessionHelper(); // before chroot: terminal processes (also later execs) need it
    if (!oci) c.chroot(root);
    mark("rootfs");
    markReady();
  } catch (err) {
    if (err instanceof RootfsError) return fail("rootfs", err.message);
    return fail("rootfs", errorText(err));
  }

  let workload: Running;
  try {
    const proc = oci
      ? prepareCrunRun(oci.spec, oci.root, OCI_ID, cfg.process.terminal, log)
      : cfg.process;
    workload = startProcess(0, proc, sink(), owned);
    if (pod) workload = pod.signalVia(OCI_ID, workload);
  } catch (err) {
    const code = err instanceof ExecError ? err.code : 127;
    return fail("exec", errorText(err), code === 127 ? undefined : code);
  }
  procs.adopt(workload);
  for (const signo of signalsBeforeStart.splice(0)) workload.signal(signo);
  await channel.sendJson(MsgType.STARTED, 0, { pid: workload.pid });
  mark("spawn");
  // Not needed before the workload runs, so not on the boot-to-workload path.
  const stopReaper = startReaper(owned);
  mark("reaper");
  log(
    `timing: ${
      marks.map(([k, t], i) => `${k} ${Math.round(t - (i ? marks[i - 1][1] : 0))}`).join(", ")
    } ms; total ${Math.round(marks[marks.length - 2][1])} ms since Deno started to STARTED`,
  );

  const code = await workload.done;
  const oomKilled = oomKills?.killed(code) === true;
  procs.delete(0);
  stopReaper();
  // crun could not create the container (its process never ran): say why, not just the status.
  const failed = oci && code !== 0 && crunFailure(oci.root, OCI_ID);
  if (failed) return fail("exec", `crun: ${failed}`, code);
  await channel.sendJson(MsgType.EXIT, 0, { code, ...(oomKilled ? { oomKilled } : {}) })
    .catch(() => {});
  return finish(code);
}

// PID 1 must never die of a stray rejection: the kernel would panic instead of reporting.
globalThis.addEventListener("unhandledrejection", (e) => {
  e.preventDefault();
  console.error(`nerdbox-init: unhandled rejection: ${e.reason}`);
});

try {
  await main();
} catch (err) {
  console.error(`nerdbox-init: fatal: ${err instanceof Error ? err.stack : err}`);
  await fail("config", `internal error: ${errorText(err)}`);
}
