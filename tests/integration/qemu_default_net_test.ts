/**
 * Real guests under TCG on the default network (no network attached → nerdbox starts passt for
 * the VM, inside a test netns): DHCP, outbound to a host server through the gateway, a published
 * port reached from the host, signal delivery, exit 0; and passt without DHCP → the distinct
 * DHCP-timeout error.
 */
import { equal, match, ok } from "node:assert/strict";
import { makeBusyboxRootfs } from "../helpers/rootfs.ts";
import { makeTestNetns } from "../helpers/netns.ts";
import { bootVm, lineWatcher } from "../helpers/qemu_vm.ts";
import { GUEST_EXIT } from "../../lib/guest_protocol.ts";

const HTTP_PEER = new URL("../helpers/qemu_http_peer.ts", import.meta.url).pathname;

Deno.test("default network: DHCP via passt, guest→host via the gateway, published port, SIGTERM, exit 0", async () => {
  const ns = await makeTestNetns("nbxqd");
  const rootfs = await makeBusyboxRootfs();
  const hostNonce = crypto.randomUUID().slice(0, 8);
  const guestNonce = crypto.randomUUID().slice(0, 8);
  const peer = ns.spawn(Deno.execPath(), ["run", "-A", HTTP_PEER, "127.0.0.1", "18090", hostNonce]);
  const peerOut = lineWatcher(peer);
  try {
    await peerOut.wait(/ready/);
    const vm = await bootVm({
      rootfs,
      netns: ns.path,
      network: {
        kind: "tsi",
        ports: [{ hostIp: "127.0.0.1", hostPort: 18080, guestPort: 8080, protocol: "tcp" }],
      },
      script: [
        "ip -4 -o addr show dev eth0",
        "ip route",
        "gw=$(ip route | awk '/^default/{print $3}')",
        "wget -q -O - http://$gw:18090/from-guest",
        `mkdir -p /www && echo guest-ok ${guestNonce} > /www/index.html`,
        "httpd -p 8080 -h /www",
        "trap 'echo got-TERM; exit 0' TERM",
        "echo READY",
        "while true; do sleep 1 & wait $!; done",
      ].join("\n"),
    });
    try {
      await vm.waitStdout(/READY/);
      // Host side: the guest's request arrived, from passt's loopback mapping of the gateway.
      await peerOut.wait(/req \/from-guest 127\.0\.0\.1/, 5000);
      // Guest side: it got an address by DHCP and the host's answer.
      match(vm.stdout(), /eth0\s+inet 10\.77\.0\.2\/24/);
      match(vm.stdout(), /default via 10\.77\.0\.1 dev eth0/);
      match(vm.stdout(), new RegExp(`peer-ok ${hostNonce} /from-guest`));
      equal(vm.network?.defaultGateway, "10.77.0.1");
      // Published port: host (in the netns) → passt → guest httpd.
      const fetched = await ns.run("busybox", ["wget", "-q", "-O", "-", "http://127.0.0.1:18080/"]);
      equal(fetched.stdout.trim(), `guest-ok ${guestNonce}`, fetched.stderr);
      await vm.handle.signal(15);
      const exit = await vm.done;
      equal(exit.code, 0, exit.error);
      match(vm.stdout(), /got-TERM/);
    } finally {
      await vm.handle.dispose();
    }
    // passt was private to the VM: gone with it.
    const ss = await ns.run("ss", ["-lntH"]);
    ok(!ss.stdout.includes(":18080"), ss.stdout);
  } finally {
    peer.kill("SIGTERM");
    await peer.status;
    await ns.delete();
    await Deno.remove(rootfs, { recursive: true });
  }
});

Deno.test("default network without a DHCP server: distinct dhcp_timeout error", async () => {
  const ns = await makeTestNetns("nbxqd");
  const rootfs = await makeBusyboxRootfs();
  try {
    const vm = await bootVm({
      rootfs,
      netns: ns.path,
      network: { kind: "tsi", ports: [] },
      passtNoDhcp: true,
      dhcpTimeoutMs: 2500,
      script: "echo workload-ran",
    });
    const exit = await vm.done;
    equal(exit.code, GUEST_EXIT.dhcp_timeout);
    match(exit.error ?? "", /dhcp_timeout/);
    ok(!vm.stdout().includes("workload-ran"), "the workload never ran");
  } finally {
    await ns.delete();
    await Deno.remove(rootfs, { recursive: true });
  }
});
