/**
 * One `nerdbox run --cni` network lifetime: GC what crashed runs left, create a netns, ADD the
 * chosen network list (ports → portMappings), bring `lo` up, hand the netns to the VM; teardown
 * kills what is left in the netns, DELs while the netns still exists, deletes it and restores
 * the host objects nerdbox introduced. Teardown is idempotent and also runs on SIGINT/SIGTERM.
 * The `--cni*` flags that start one are lib/cli/cni_flags.ts; the owner records and lock are
 * cni_owners.ts, the processes in a netns netns_pids.ts.
 */
import type { PortSpec } from "../spec/types.ts";
import { addNetworkList, delNetworkList, gcCachedAttachments } from "./cni.ts";
import { listFromCache, readCacheEntry } from "./cni_cache.ts";
import type { CniOptions } from "./cni_types.ts";
import { type CniNetworkList, parseCniConfig, pickCniNetwork } from "./cni_config.ts";
import { cleanupHost, recordHostBaseline } from "./cni_host_cleanup.ts";
import { type CniResult, podAddresses } from "./cni_result.ts";
import { createNamedNetns, deleteNamedNetns, NETNS_RUN_DIR } from "./netns.ts";
import { killNetnsProcesses } from "./netns_pids.ts";
import { anyOwnerAlive, ownerAlive, type OwnerRecord, readOwners, withLock } from "./cni_owners.ts";
import { processStartTime } from "../proc.ts";

/** Default for `--cni-conf-dir`. */
export const DEFAULT_CNI_CONF_DIR = "/etc/cni/net.d";
/** Default for `--cni-bin-dir` (`:`-separated). */
export const DEFAULT_CNI_BIN_DIR = "/opt/cni/bin:/usr/lib/cni";
/** nerdbox's own CNI bookkeeping (owner records, host markers, lock). */
export const DEFAULT_CNI_STATE_DIR = "/run/nerdbox/cni";
/** Prefix of the netns names nerdbox creates for CNI sessions. */
export const NETNS_PREFIX = "nbx-";

/** What `startCniSession` needs. */
export interface CniSessionOptions {
  /** Sandbox id; becomes CNI_CONTAINERID. */
  id: string;
  confDir: string;
  /** Plugin directories, `:`-separated. */
  binDir: string;
  /** Network name to pick; the first configuration when absent. */
  network?: string;
  /** Published ports, passed as the `portMappings` capability. */
  ports: PortSpec[];
  /** Interface name in the netns (default eth0). */
  ifName?: string;
  /** Overrides for tests. */
  cacheDir?: string;
  stateDir?: string;
  /** Install SIGINT/SIGTERM handlers that tear down and exit 130/143 (default true). */
  handleSignals?: boolean;
}

/** A live CNI attachment in a netns nerdbox created. */
export interface CniSession {
  /** Path of the netns (the VMM must run in it). */
  netnsPath: string;
  /** Final ADD result. */
  result: CniResult;
  /** Pod addresses (no prefix), in result order. */
  podIps: string[];
  /** Kills what runs in the netns, DELs, deletes the netns, restores the host. Idempotent. */
  teardown(): Promise<void>;
}

const enc = new TextEncoder();

function b64(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s);
}

function netnsNameFor(id: string): string {
  if (id.length <= 59) return NETNS_PREFIX + id;
  let h = 0x811c9dc5;
  for (const c of enc.encode(id)) h = Math.imul(h ^ c, 0x01000193) >>> 0;
  return `${NETNS_PREFIX}${id.slice(0, 50)}-${h.toString(16).padStart(8, "0")}`;
}

function portMappings(ports: PortSpec[]): Record<string, unknown>[] {
  return ports.map((p) => ({
    hostPort: p.hostPort,
    containerPort: p.guestPort,
    protocol: p.protocol,
    ...(p.hostIp ? { hostIP: p.hostIp } : {}),
  }));
}

async function detach(
  owner: OwnerRecord,
  list: CniNetworkList,
  opts: CniOptions,
): Promise<string[]> {
  const errors: string[] = [];
  const netnsPath = `${NETNS_RUN_DIR}/${owner.netnsName}`;
  await killNetnsProcesses(owner.netnsName).catch(() => {});
  try {
    await delNetworkList(list, {
      containerId: owner.id,
      ifName: owner.ifName,
      netns: netnsPath,
      capabilityArgs: owner.capabilityArgs,
    }, opts);
  } catch (e) {
    errors.push((e as Error).message);
  }
  try {
    await deleteNamedNetns(owner.netnsName);
  } catch (e) {
    errors.push((e as Error).message);
  }
  return errors;
}

/**
 * DELs the attachments of nerdbox runs that died without tearing down (owner process gone), and
 * cached attachments in nerdbox netns paths that no live run owns. Returns problems met.
 */
export async function gcStaleSessions(
  opts: CniOptions,
  stateDir = DEFAULT_CNI_STATE_DIR,
): Promise<string[]> {
  return await withLock(stateDir, async () => {
    const errors: string[] = [];
    const owners = await readOwners(stateDir);
    const live = new Set<string>();
    for (const { path, owner } of owners) {
      if (await ownerAlive(owner)) {
        live.add(owner.netnsName);
        continue;
      }
      try {
        const entry = await readCacheEntry(opts, owner.network, {
          containerId: owner.id,
          ifName: owner.ifName,
        });
        const list = entry
          ? listFromCache(entry)
          : parseCniConfig(atob(owner.config), `${path}.conflist`);
        const errs = await detach(owner, list, opts);
        if (errs.length === 0) await Deno.remove(path);
        else errors.push(...errs);
      } catch (e) {
        errors.push(`${path}: ${(e as Error).message}`);
      }
    }
    errors.push(
      ...await gcCachedAttachments(opts, (e) => {
        const prefix = `${NETNS_RUN_DIR}/${NETNS_PREFIX}`;
        return e.netns.startsWith(prefix) && !live.has(e.netns.slice(NETNS_RUN_DIR.length + 1));
      }),
    );
    if (live.size === 0) errors.push(...await cleanupHost(stateDir));
    return errors;
  });
}

/**
 * Creates a netns and attaches it to the chosen CNI network; see the module doc. A SIGINT or
 * SIGTERM during the setup is held until the setup has finished or failed; then whatever was
 * made is undone and the process exits 130/143.
 */
export async function startCniSession(opts: CniSessionOptions): Promise<CniSession> {
  let pending: "SIGINT" | "SIGTERM" | undefined;
  const deferred = (["SIGINT", "SIGTERM"] as const).map((sig) => {
    const h = () => {
      pending ??= sig;
    };
    Deno.addSignalListener(sig, h);
    return [sig, h] as const;
  });
  const stopDeferring = () => {
    for (const [sig, h] of deferred) Deno.removeSignalListener(sig, h);
  };
  let session: CniSession;
  try {
    session = await setupSession(opts);
  } catch (e) {
    stopDeferring();
    if (pending !== undefined) {
      console.error(`nerdbox: ${(e as Error).message}`);
      console.error(`nerdbox: interrupted by ${pending} during CNI setup`);
      Deno.exit(pending === "SIGINT" ? 130 : 143);
    }
    throw e;
  }
  stopDeferring(); // the session's own handlers (if any) are in place already: no gap
  if (pending !== undefined) {
    console.error(`nerdbox: interrupted by ${pending} during CNI setup; detaching`);
    await session.teardown().catch((e) => console.error(`nerdbox: ${(e as Error).message}`));
    Deno.exit(pending === "SIGINT" ? 130 : 143);
  }
  return session;
}

async function setupSession(opts: CniSessionOptions): Promise<CniSession> {
  const ifName = opts.ifName ?? "eth0";
  const stateDir = opts.stateDir ?? DEFAULT_CNI_STATE_DIR;
  const cniOpts: CniOptions = {
    binDirs: opts.binDir.split(":").filter(Boolean),
    cacheDir: opts.cacheDir,
  };
  const list = await pickCniNetwork(opts.confDir, opts.network);
  const gcErrors = await gcStaleSessions(cniOpts, stateDir);
  for (const e of gcErrors) console.error(`nerdbox: warning: CNI GC: ${e}`);

  const netnsName = netnsNameFor(opts.id);
  const ownerPath = `${stateDir}/owners/${netnsName}.json`;
  const owner: OwnerRecord = {
    pid: Deno.pid,
    start: (await processStartTime(Deno.pid)) ?? "",
    id: opts.id,
    netnsName,
    network: list.name,
    ifName,
    config: b64(list.bytes),
    capabilityArgs: opts.ports.length > 0 ? { portMappings: portMappings(opts.ports) } : {},
  };

  let done: Promise<void> | undefined;
  const signalHandlers: [Deno.Signal, () => void][] = [];
  const removeSignals = () => {
    for (const [sig, h] of signalHandlers) Deno.removeSignalListener(sig, h);
    signalHandlers.length = 0;
  };
  const teardownOnce = async (): Promise<void> => {
    removeSignals();
    await withLock(stateDir, async () => {
      const errors = await detach(owner, list, cniOpts);
      if (errors.length === 0) await Deno.remove(ownerPath).catch(() => {});
      if (!await anyOwnerAlive(stateDir, ownerPath)) {
        errors.push(...await cleanupHost(stateDir));
      }
      if (errors.length > 0) {
        throw new Error(`CNI teardown of ${opts.id}: ${errors.join("; ")}`);
      }
    });
  };
  const teardown = () => (done ??= teardownOnce());

  const result = await withLock(stateDir, async (): Promise<CniResult> => {
    const existing = (await readOwners(stateDir)).find((o) => o.path === ownerPath);
    if (existing && (await ownerAlive(existing.owner))) {
      throw new Error(
        `CNI sandbox id ${JSON.stringify(opts.id)} is in use by nerdbox pid ${existing.owner.pid}`,
      );
    }
    await recordHostBaseline(list, stateDir);
    await Deno.mkdir(`${stateDir}/owners`, { recursive: true, mode: 0o700 });
    await Deno.writeTextFile(ownerPath, JSON.stringify(owner), { mode: 0o600 });
    let created = false;
    let added = false;
    try {
      const netnsPath = await createNamedNetns(netnsName);
      created = true;
      const r = await addNetworkList(list, {
        containerId: opts.id,
        ifName,
        netns: netnsPath,
        capabilityArgs: owner.capabilityArgs,
      }, cniOpts);
      added = true;
      if (!list.plugins.some((p) => p.type === "loopback")) {
        const o = await new Deno.Command("ip", {
          args: ["-n", netnsName, "link", "set", "lo", "up"],
          stdout: "null",
          stderr: "piped",
        }).output();
        if (!o.success) throw new Error(`ip -n ${netnsName} link set lo up failed`);
      }
      return r;
    } catch (e) {
      // addNetworkList DELs the list itself when it fails; only a later failure needs a DEL.
      if (added) {
        await delNetworkList(list, {
          containerId: opts.id,
          ifName,
          netns: `${NETNS_RUN_DIR}/${netnsName}`,
          capabilityArgs: owner.capabilityArgs,
        }, cniOpts).catch(() => {});
      }
      if (created) await deleteNamedNetns(netnsName).catch(() => {});
      await Deno.remove(ownerPath).catch(() => {});
      if (!await anyOwnerAlive(stateDir)) await cleanupHost(stateDir);
      throw e;
    }
  });

  if (opts.handleSignals !== false) {
    for (const [sig, code] of [["SIGINT", 130], ["SIGTERM", 143]] as const) {
      const h = () => {
        teardown().catch((e) => console.error(`nerdbox: ${(e as Error).message}`))
          .finally(() => Deno.exit(code));
      };
      Deno.addSignalListener(sig, h);
      signalHandlers.push([sig, h]);
    }
  }

  return {
    netnsPath: `${NETNS_RUN_DIR}/${netnsName}`,
    result,
    podIps: podAddresses(result).map((c) => c.address),
    teardown,
  };
}

/**
 * Inside the pod netns a published port is served on its container port: portmap DNATs
 * host:hostPort → podIP:guestPort, and the VMM (passt or TSI) forwards guestPort → the guest.
 */
export function podPorts(ports: PortSpec[]): PortSpec[] {
  return ports.map((p) => ({
    hostPort: p.guestPort,
    guestPort: p.guestPort,
    protocol: p.protocol,
  }));
}
