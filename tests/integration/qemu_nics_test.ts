/**
 * Real guests under TCG with attached networks (unixstream): eth0 = gvisor-tap-vsock (libgvproxy,
 * DHCP, default route) and eth1 = passt with a static address and no default route, both run
 * inside a test netns. Checked from both sides; the workload exits 1.
 */
import { deepEqual, equal, match, ok } from "node:assert/strict";
import { makeBusyboxRootfs } from "../helpers/rootfs.ts";
import { makeTestNetns } from "../helpers/netns.ts";
import { bootVm, lineWatcher } from "../helpers/qemu_vm.ts";
import { startPasst } from "../../lib/net/passt.ts";
import type { NicPlan } from "../../lib/vm/types.ts";
import { parseMac } from "../../lib/spec/mac.ts";
import { checkSocketPath } from "../../lib/spec/socket_path.ts";

const HTTP_PEER = new URL("../helpers/qemu_http_peer.ts", import.meta.url).pathname;
const GV_PEER = new URL("../helpers/qemu_gvproxy_peer.ts", import.meta.url).pathname;

function nic(p: Partial<NicPlan> & Pick<NicPlan, "name" | "socket" | "mac">): NicPlan {
  return {
    mode: "unixstream",
    features: 0,
    vfkit: false,
    vnetHdr: false,
    dhcp: false,
    addrs: [],
    defaultRoute: false,
    ...p,
  };
}

Deno.test("gvproxy DHCP on eth0 (default route) + passt static on eth1 (no default route), exit 1", async () => {
  const ns = await makeTestNetns("nbxqn");
  const rootfs = await makeBusyboxRootfs();
  const dir = `/run/nbxq-nics-${crypto.randomUUID().slice(0, 8)}`;
  await Deno.mkdir(dir, { mode: 0o755 });
  const nonce = crypto.randomUUID().slice(0, 8);
  // A server reachable only inside the netns, on an address outside both guest subnets.
  equal((await ns.run("ip", ["addr", "add", "10.88.0.5/32", "dev", "lo"])).code, 0);
  const peer = ns.spawn(Deno.execPath(), ["run", "-A", HTTP_PEER, "0.0.0.0", "18090", nonce]);
  const peerOut = lineWatcher(peer);
  const gvMac = "52:54:00:12:34:56";
  const gv = ns.spawn(Deno.execPath(), [
    "run",
    "-A",
    GV_PEER,
    JSON.stringify({ socketPath: `${dir}/gv.sock`, guestMac: gvMac }),
  ], "piped");
  const gvOut = lineWatcher(gv);
  const passt = await startPasst({ dir: `${dir}/passt`, netns: ns.path });
  try {
    await peerOut.wait(/ready/);
    await gvOut.wait(/ready v\d/);
    const vm = await bootVm({
      rootfs,
      network: {
        kind: "nics",
        nics: [
          nic({
            name: "eth0",
            socket: checkSocketPath(`${dir}/gv.sock`, "unixstream"),
            mac: parseMac(gvMac),
            dhcp: true,
            defaultRoute: true,
          }),
          nic({
            name: "eth1",
            socket: checkSocketPath(passt.socket, "unixstream"),
            mac: parseMac("52:54:00:aa:bb:02"),
            addrs: ["10.77.0.2/24"],
          }),
        ],
      },
      script: [
        "ip -4 -o addr show",
        "ip route",
        "wget -q -O - http://10.88.0.5:18090/via-gvproxy",
        "wget -q -O - http://10.77.0.1:18090/via-passt",
        "exit 1",
      ].join("\n"),
    });
    let exit;
    try {
      exit = await vm.done;
    } finally {
      await vm.handle.dispose();
    }
    equal(exit.code, 1, `${exit.error ?? ""}\n${vm.stdout()}\n${vm.stderr()}`);
    const out = vm.stdout();
    // Guest side: addresses by MAC, exactly one default route (through the first network).
    match(out, /eth0\s+inet 192\.168\.127\.2\/24/);
    match(out, /eth1\s+inet 10\.77\.0\.2\/24/);
    deepEqual(out.match(/^default .*$/gm), ["default via 192.168.127.1 dev eth0 "]);
    match(out, /10\.77\.0\.0\/24 dev eth1/);
    match(out, new RegExp(`peer-ok ${nonce} /via-gvproxy`));
    match(out, new RegExp(`peer-ok ${nonce} /via-passt`));
    const names = vm.network?.interfaces.map((i) => [i.name, i.mac]);
    deepEqual(names, [["eth0", gvMac], ["eth1", "52:54:00:aa:bb:02"]]);
    // Host side: gvproxy dialled from the netns (source 10.88.0.5 or the veth address), passt
    // mapped the gateway to the netns loopback.
    await peerOut.wait(/req \/via-gvproxy (10\.88\.0\.5|10\.77\.0\.2)/, 5000);
    await peerOut.wait(/req \/via-passt 127\.0\.0\.1/, 5000);
    await gv.stdin.close();
    await gvOut.wait(/\{.*\}/, 10_000);
    const stats = JSON.parse(gvOut.text().split("\n").find((l) => l.startsWith("{"))!);
    ok(stats.UDP.PacketsReceived > 0, "gvproxy served DHCP");
    ok(stats.TCP.ValidSegmentsReceived > 0, "gvproxy carried the guest's TCP");
  } finally {
    await passt.stop();
    peer.kill("SIGTERM");
    await peer.status;
    try {
      await gv.stdin.close();
    } catch {
      // closed
    }
    await gv.status;
    await ns.delete();
    await Deno.remove(rootfs, { recursive: true });
    await Deno.remove(dir, { recursive: true });
  }
});
