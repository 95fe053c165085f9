/**
 * The QEMU backend's network realisation: it carries out what the plan decided
 * (lib/vm/plan_network.ts) and decides nothing itself. `pod` takes over the pod interface (tap +
 * tc redirect), `passt` starts the private passt, `nics` binds the local ends of unixgram NICs
 * (and greets vfkit providers). Everything started is recorded for the dead-run sweep and
 * registered for cleanup.
 */
import type { GuestNetwork } from "../guest_protocol.ts";
import type { DnsSpec } from "../spec/types.ts";
import type { NetnsPath } from "../spec/netns_path.ts";
import { type PasstHandle, startPasst } from "../net/passt.ts";
import { startTcRedirect } from "../net/tc_redirect.ts";
import { sendVfkitHandshake } from "../../ffi/unix_dgram.ts";
import type { RunRecord } from "./run_state.ts";
import { procRef } from "../proc.ts";
import { dgramLocalSocket } from "./plan_network.ts";
import type { QemuNic } from "./qemu_argv.ts";
import type { NetworkPlan } from "./types.ts";
import { parseResolvConf } from "../net/resolv_conf.ts";

/** What realising a network needs from the run. */
export interface QemuNetContext {
  stateDir: string;
  netns?: NetnsPath;
  /** Undo steps, run in reverse order at the end. */
  cleanups: Array<() => Promise<void> | void>;
  /** The run record (lib/vm/run_state.ts) and how to save it. */
  record: RunRecord;
  saveRecord: () => Promise<void>;
}

/** A realised network. */
export interface QemuNetwork {
  /** The NICs, in guest order, for the argv. */
  nics: QemuNic[];
  /** The guest's view when it differs from the plan's NICs (pod, passt). */
  guestNetworks?: GuestNetwork[];
  /** DNS for a guest on the pod interface (no DHCP there), when the plan has none. */
  dns?: DnsSpec;
  /** The private passt, when one was started. */
  passt?: PasstHandle;
}

/** Realises `network` (a QEMU plan's) in the run's state dir and netns. */
export async function realiseQemuNetwork(
  network: NetworkPlan,
  c: QemuNetContext,
): Promise<QemuNetwork> {
  switch (network.kind) {
    case "tsi":
      throw new Error("QEMU cannot realise a tsi network (a libkrun plan)");
    case "pod": {
      if (c.netns === undefined) throw new Error("a pod network needs the plan's netns");
      // The VM takes over the pod interface (docs/cni.md "Joining a prepared netns"), so every
      // port the guest serves answers at the pod IP.
      const r = await startTcRedirect(c.netns);
      c.cleanups.push(() => r.undo());
      c.record.netns = c.netns;
      c.record.tcRedirect = { tap: r.tap, dev: r.pod.name, txqlen: r.pod.txqlen };
      await c.saveRecord();
      return {
        nics: [{ mac: r.pod.mac, netdev: { kind: "tap", ifname: r.tap } }],
        guestNetworks: [{
          mac: r.pod.mac,
          dhcp: false,
          addrs: [...r.pod.addrs],
          defaultRoute: true,
          gateway4: r.pod.gateway4,
          mtu: r.pod.mtu,
        }],
        dns: await podDns(c.netns),
      };
    }
    case "passt": {
      // passt runs as nobody and must reach its socket dir inside stateDir.
      await Deno.chmod(c.stateDir, 0o711);
      const dir = network.socket.slice(0, network.socket.lastIndexOf("/"));
      const passt = await startPasst({
        dir,
        ports: network.ports,
        netns: c.netns,
        noDhcp: network.noDhcp,
        // Recorded before anything connects to it: should this process die before QEMU does,
        // the dead-run sweep (and the shim's `delete`) kill passt, which would wait forever.
        onSpawn: async (pid) => {
          const ref = procRef(pid);
          if (ref) c.record.passt = ref;
          await c.saveRecord();
        },
      });
      c.cleanups.push(async () => {
        await passt.stop();
        await Deno.remove(dir, { recursive: true }).catch(() => {});
      });
      return {
        nics: [{ mac: network.mac, netdev: { kind: "stream", path: passt.socket } }],
        guestNetworks: [{ mac: network.mac, dhcp: true, addrs: [], defaultRoute: true }],
        passt,
      };
    }
    case "nics": {
      const nics: QemuNic[] = [];
      for (const [i, nic] of network.nics.entries()) {
        if (nic.mode === "unixstream") {
          nics.push({ mac: nic.mac, netdev: { kind: "stream", path: nic.socket } });
          continue;
        }
        const local = nic.localSocket ?? dgramLocalSocket(c.stateDir, i);
        await Deno.remove(local).catch(() => {}); // QEMU binds it: nothing stale may be there
        c.cleanups.push(() => Deno.remove(local).catch(() => {}));
        if (nic.vfkit) sendVfkitHandshake(local, nic.socket);
        nics.push({
          mac: nic.mac,
          netdev: { kind: "dgram", localPath: local, remotePath: nic.socket },
        });
      }
      return { nics };
    }
  }
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
  return parseResolvConf(text);
}

/** How long after passt's exit QEMU must still run for passt's exit to count as a loss. */
const PASST_LOSS_GRACE_MS = 500;

/**
 * Watches a VM's private passt: passt `-1` exits by itself once QEMU's connection closes, so an
 * exit while QEMU still runs (kill -9, a crash) means the VM lost its network. That is reported
 * through `warn`; the run goes on (the workload may not need the network, and its status is
 * still the run's status).
 */
export function watchPasst(
  passt: PasstHandle,
  qemuGone: () => boolean,
  warn: (m: string) => void,
): void {
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
