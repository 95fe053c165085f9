/**
 * The GuestConfig (lib/guest_protocol.ts) both backends send as the channel's CONFIG frame, built
 * from a VmPlan: the hostname, the rootfs, the workload process, the NICs and ctr.network
 * interfaces, DNS and the OCI runtime spec crun applies.
 */
import { GUEST_PROTOCOL_VERSION, type GuestConfig, type GuestRootfs } from "../guest_protocol.ts";
import type { VmPlan } from "./types.ts";
import { withCtrNetworks } from "./plan_ctr_network.ts";

/** Builds the GuestConfig for a plan (the guest finds its rootfs as `rootfs` says). */
export function buildGuestConfig(plan: VmPlan, rootfs: GuestRootfs): GuestConfig {
  const networks = plan.network.kind === "nics"
    ? plan.network.nics.map((n) => ({
      mac: n.mac,
      dhcp: n.dhcp,
      addrs: [...n.addrs],
      defaultRoute: n.defaultRoute,
      ...(n.gateway4 ? { gateway4: n.gateway4 } : {}),
    }))
    : [];
  return {
    version: GUEST_PROTOCOL_VERSION,
    hostname: plan.hostname,
    rootfs,
    process: {
      args: [...plan.process.args],
      env: [...plan.process.env],
      cwd: plan.process.cwd,
      uid: plan.process.uid,
      gid: plan.process.gid,
      terminal: plan.process.terminal,
    },
    networks: withCtrNetworks(networks, plan.ctrNetworks),
    ...(plan.dns ? { dns: plan.dns } : {}),
    dhcpTimeoutMs: 15_000,
    ...(plan.oci ? { oci: plan.oci } : {}),
  };
}
