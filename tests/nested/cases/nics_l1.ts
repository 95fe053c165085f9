/**
 * libkrun e2e, NICs (inside L1, which has a dummy default route so passt starts): a unixstream NIC
 * to a real passt with DHCP; libgvproxy (unixstream on Linux) with DHCP as eth0 plus passt as
 * eth1 with the default route via the first; unixgram NICs (vfkit=true and false) to a datagram
 * peer (a test fake: libgvproxy 0.2.11 serves no unixgram on Linux) with static IPv4 + IPv6; and
 * the virtio-net `features` passed versus what the guest negotiates.
 */
import assert from "node:assert/strict";
import { libkrunTest } from "../../helpers/kvm_guests.ts";
import { startPasst } from "../../../lib/net/passt.ts";
import { startGvproxy } from "../../../lib/net/gvproxy.ts";
import { startDgramPeer } from "../../helpers/qemu_dgram_peer.ts";
import { krun, withRootfs } from "./krun.ts";

/** An HTTP server on 0.0.0.0 answering `host-ok <path>`. */
function server(): { port: number; seen: string[]; close: () => Promise<void> } {
  const seen: string[] = [];
  const s = Deno.serve({ hostname: "0.0.0.0", port: 0, onListen: () => {} }, (req, info) => {
    seen.push(`${new URL(req.url).pathname} ${(info.remoteAddr as Deno.NetAddr).hostname}`);
    return new Response(`host-ok ${new URL(req.url).pathname}\n`, {
      headers: { connection: "close" },
    });
  });
  return { port: s.addr.port, seen, close: () => s.shutdown() };
}

const SYSFS = "[ -d /sys/class/net ] || mount -t sysfs sysfs /sys";

libkrunTest(
  "libkrun NIC: unixstream to a real passt, DHCP, default route, resolv.conf, features",
  () =>
    withRootfs("passt", async (rootfs, id) => {
      const dir = await Deno.makeTempDir({ prefix: "nb-l1-passt-" });
      await Deno.chmod(dir, 0o755); // passt runs as nobody
      const passt = await startPasst({ dir: `${dir}/p` });
      const srv = server();
      try {
        const r = await krun(id, [
          "--net",
          `socket=${passt.socket},mode=unixstream,mac=5a:94:ef:e4:0c:ee,dhcp=true,` +
          `features=VIRTIO_NET_F_CSUM|VIRTIO_NET_F_GUEST_CSUM`,
          rootfs,
          "--",
          "/bin/sh",
          "-c",
          `${SYSFS}; ip -4 -o addr show eth0; ip route; cat /etc/resolv.conf; ` +
          `echo "features=$(cat /sys/class/net/eth0/device/features)"; ` +
          `wget -q -O - http://10.0.2.2:${srv.port}/via-passt`,
        ]);
        assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
        assert.match(r.stdout, /eth0\s+inet 10\.0\.2\.15\/24/, r.stdout);
        assert.match(r.stdout, /^default via 10\.0\.2\.2 dev eth0/m, r.stdout);
        assert.match(r.stdout, /^nameserver /m, r.stdout);
        assert.match(r.stdout, /host-ok \/via-passt/);
        // Negotiated virtio-net features (bit i = character i): CSUM and GUEST_CSUM as passed,
        // none of the TSO/UFO bits that were not.
        const f = r.stdout.match(/features=([01]+)/)?.[1] ?? "";
        assert.equal(f[0], "1", `CSUM negotiated: ${f}`);
        assert.equal(f[1], "1", `GUEST_CSUM negotiated: ${f}`);
        assert.equal(f[7] + f[11], "00", `no TSO4 offered, none negotiated: ${f}`);
        assert.deepEqual(srv.seen.map((s) => s.split(" ")[0]), ["/via-passt"]);
      } finally {
        await srv.close();
        await passt.stop();
        await Deno.remove(dir, { recursive: true });
      }
    }),
);

libkrunTest(
  "libkrun NICs: libgvproxy DHCP on eth0 + passt DHCP on eth1, one default route via eth0",
  () =>
    withRootfs("two", async (rootfs, id) => {
      const dir = await Deno.makeTempDir({ prefix: "nb-l1-two-" });
      await Deno.chmod(dir, 0o755); // passt runs as nobody
      // An address only L1 itself has: the guest reaches it through gvproxy's NAT (eth0).
      const add = await new Deno.Command("ip", {
        args: ["addr", "add", "10.88.0.5/32", "dev", "lo"],
      })
        .output();
      assert.ok(add.success);
      const gvMac = "52:54:00:12:34:56";
      const gv = await startGvproxy({ socketPath: `${dir}/gv.sock`, guestMac: gvMac });
      const passt = await startPasst({ dir: `${dir}/p` });
      const srv = server();
      try {
        const r = await krun(id, [
          "--net",
          `socket=${gv.socket},mode=unixstream,mac=${gvMac},dhcp=true`,
          "--net",
          `socket=${passt.socket},mode=unixstream,mac=52:54:00:aa:bb:02,dhcp=true`,
          rootfs,
          "--",
          "/bin/sh",
          "-c",
          `ip -4 -o addr show; ip route; ` +
          `wget -q -O - http://10.88.0.5:${srv.port}/via-gvproxy; ` +
          `wget -q -O - http://10.0.2.2:${srv.port}/via-passt; exit 1`,
        ]);
        assert.equal(r.code, 1, `${r.stdout}\n${r.stderr}`);
        assert.match(r.stdout, /eth0\s+inet 192\.168\.127\.2\/24/, r.stdout);
        assert.match(r.stdout, /eth1\s+inet 10\.0\.2\.15\/24/, r.stdout);
        assert.deepEqual(r.stdout.match(/^default .*$/gm), ["default via 192.168.127.1 dev eth0 "]);
        assert.match(r.stdout, /host-ok \/via-gvproxy/);
        assert.match(r.stdout, /host-ok \/via-passt/);
        const stats = gv.stats() as { UDP?: { PacketsReceived?: number } };
        assert.ok((stats.UDP?.PacketsReceived ?? 0) > 0, "gvproxy served DHCP");
      } finally {
        await srv.close();
        await passt.stop();
        await gv.stop();
        await new Deno.Command("ip", { args: ["addr", "del", "10.88.0.5/32", "dev", "lo"] })
          .output();
        await Deno.remove(dir, { recursive: true });
      }
    }),
);

for (const vfkit of [true, false]) {
  libkrunTest(
    `libkrun NIC: unixgram (vfkit=${vfkit}), static IPv4 + IPv6, the peer answers ping`,
    () =>
      withRootfs(`gram${vfkit ? "v" : "n"}`, async (rootfs, id) => {
        const dir = await Deno.makeTempDir({ prefix: "nb-l1-gram-" });
        const peer = startDgramPeer(`${dir}/peer.sock`, "10.98.0.1");
        try {
          const r = await krun(id, [
            "--net",
            `socket=${peer.path},mode=unixgram,mac=52:54:00:98:00:02,` +
            `addr=10.98.0.2/24,addr=fd00:98::2/64,vfkit=${vfkit}`,
            rootfs,
            "--",
            "/bin/sh",
            "-c",
            "ip -o addr show eth0; ip route; ping -c 1 -W 5 10.98.0.1",
          ]);
          assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
          assert.match(r.stdout, /eth0\s+inet 10\.98\.0\.2\/24/);
          assert.match(r.stdout, /eth0\s+inet6 fd00:98::2\/64/);
          assert.match(r.stdout, /^default via 10\.98\.0\.1 dev eth0/m);
          assert.match(r.stdout, /1 packets received/);
          assert.equal(peer.log.vfkitFirst, vfkit, "VFKT first exactly when vfkit=true");
          assert.ok(peer.log.macs.has("52:54:00:98:00:02"));
        } finally {
          await peer.stop();
          await Deno.remove(dir, { recursive: true });
        }
      }),
  );
}
