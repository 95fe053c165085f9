/**
 * Real guests under TCG on unixgram networks: two guests joined by a datagram pair (each QEMU's
 * `-netdev dgram` local socket is the other's provider socket), static addresses. Guest B sends
 * a line over TCP to guest A, which prints it and exits 0; B then kills itself with SIGKILL → 137.
 * Guest A's second NIC is `vfkit=true` towards a test peer (tests/helpers/qemu_dgram_peer.ts) that
 * wants `VFKT` first and answers ARP and ping.
 */
import { equal, match, ok } from "node:assert/strict";
import { makeBusyboxRootfs } from "../helpers/rootfs.ts";
import { bootVm } from "../helpers/qemu_vm.ts";
import type { NicPlan } from "../../lib/vm/types.ts";
import { parseMac } from "../../lib/spec/mac.ts";
import { checkSocketPath } from "../../lib/spec/socket_path.ts";
import { startDgramPeer } from "../helpers/qemu_dgram_peer.ts";
import { UnixDgram } from "../../ffi/unix_dgram.ts";

function gramNic(socket: string, mac: string, addr: string): NicPlan {
  return {
    name: "eth0",
    socket: checkSocketPath(socket, "unixgram"),
    mode: "unixgram",
    mac: parseMac(mac),
    features: 0,
    vfkit: false,
    vnetHdr: false,
    dhcp: false,
    addrs: [addr],
    defaultRoute: true,
    gateway4: "10.99.0.1",
  };
}

Deno.test("unixgram: two guests on a datagram pair talk TCP, vfkit peer answers ping; exit 0 and 137", async () => {
  const rootfs = await makeBusyboxRootfs();
  const id = crypto.randomUUID().slice(0, 8);
  const peerDir = `/run/nbxq-gram-peer-${id}`;
  await Deno.mkdir(peerDir);
  const peer = startDgramPeer(`${peerDir}/peer.sock`, "10.98.0.1");
  const stateA = `/run/nbxq-gram-a-${id}`;
  const stateB = `/run/nbxq-gram-b-${id}`;
  const nonce = crypto.randomUUID().slice(0, 8);
  // The backend refuses a provider socket that is not there at boot (QEMU's dgram netdev would
  // send into the void). A's provider is B's local socket, which B's QEMU binds only later: a
  // placeholder datagram socket (TEST FAKE) stands there until B boots and binds the same path.
  await Deno.mkdir(stateB);
  const placeholder = UnixDgram.bind(`${stateB}/n0.sock`);
  try {
    const a = await bootVm({
      rootfs,
      stateDir: stateA,
      network: {
        kind: "nics",
        nics: [
          gramNic(`${stateB}/n0.sock`, "52:54:00:99:00:02", "10.99.0.2/24"),
          {
            ...gramNic(peer.path, "52:54:00:98:00:02", "10.98.0.2/24"),
            name: "eth1",
            vfkit: true,
            defaultRoute: false,
            gateway4: undefined,
          },
        ],
      },
      script: [
        "ip -4 -o addr show",
        "ping -c 2 -W 3 10.98.0.1 && echo PING-OK",
        "nc -l -p 9000 > /tmp/got",
        'echo "A got: $(cat /tmp/got)"',
      ].join("\n"),
    });
    placeholder.close();
    await Deno.remove(`${stateB}/n0.sock`).catch(() => {});
    // B's provider is A's local socket: up once A's QEMU has bound it.
    for (
      let i = 0;
      i < 600 && !(await Deno.lstat(`${stateA}/n0.sock`).catch(() => null))?.isSocket;
      i++
    ) {
      await new Promise((r) => setTimeout(r, 50));
    }
    const b = await bootVm({
      rootfs,
      stateDir: stateB,
      network: {
        kind: "nics",
        nics: [gramNic(`${stateA}/n0.sock`, "52:54:00:99:00:03", "10.99.0.3/24")],
      },
      script: [
        "ip -4 -o addr show dev eth0",
        "i=0",
        `until echo hi-from-b-${nonce} | nc 10.99.0.2 9000; do`,
        "  i=$((i+1)); [ $i -gt 150 ] && exit 9; sleep 0.2",
        "done",
        "echo B sent",
        "kill -9 $$",
      ].join("\n"),
    });
    try {
      const [ea, eb] = await Promise.all([a.done, b.done]);
      equal(ea.code, 0, `${ea.error ?? ""}\n${a.stdout()}${a.stderr()}`);
      equal(eb.code, 137, `${eb.error ?? ""}\n${b.stdout()}${b.stderr()}`);
      match(a.stdout(), /eth0\s+inet 10\.99\.0\.2\/24/);
      match(b.stdout(), /eth0\s+inet 10\.99\.0\.3\/24/);
      match(a.stdout(), new RegExp(`A got: hi-from-b-${nonce}`));
      match(b.stdout(), /B sent/);
      // vfkit peer: VFKT came first, from A's local socket; then ARP and pings from A's MAC.
      match(a.stdout(), /eth1\s+inet 10\.98\.0\.2\/24/);
      match(a.stdout(), /PING-OK/);
      equal(peer.log.vfkitFirst, true);
      equal(peer.log.vfkitFrom, `${stateA}/n1.sock`);
      ok(peer.log.arpRequests >= 1 && peer.log.echoRequests >= 2, JSON.stringify(peer.log));
      ok(peer.log.macs.has("52:54:00:98:00:02"));
    } finally {
      await a.handle.dispose();
      await b.handle.dispose();
    }
  } finally {
    placeholder.close();
    await Deno.remove(stateB, { recursive: true }).catch(() => {});
    await peer.stop();
    await Deno.remove(peerDir, { recursive: true });
    await Deno.remove(rootfs, { recursive: true });
  }
});
