/**
 * guest/ DHCP for real: busybox udhcpd serves one end of a veth pair in its own netns, the
 * guest's DHCP client (and the whole init in dev mode) runs on the other end in a second netns.
 * Also: no server → the distinct dhcp_timeout error and exit status.
 */
import assert from "node:assert/strict";
import { DENO, inNetns, makeNetns, run, runGuest, withLoopRootfs } from "../helpers/guest_env.ts";
import {
  GUEST_EXIT,
  type GuestConfig,
  type GuestError,
  type GuestNetworkReport,
  MsgType,
} from "../../lib/guest_protocol.ts";

const MAC = "52:54:00:9d:00:01";
const ROOT = new URL("../../", import.meta.url).pathname;

/** A dev-mode guest config: block rootfs `device`, one NIC (MAC) configured by DHCP. */
function dhcpGuestConfig(
  device: string,
  args: string[],
  o: { env?: string[]; dhcpTimeoutMs?: number } = {},
): GuestConfig {
  return {
    version: 1,
    hostname: "gd-box",
    rootfs: { kind: "block", device, fstype: "ext4" },
    process: { args, env: o.env ?? ["PATH=/bin"], cwd: "/", uid: 0, gid: 0, terminal: false },
    networks: [{ mac: MAC, dhcp: true, addrs: [], defaultRoute: true }],
    dhcpTimeoutMs: o.dhcpTimeoutMs ?? 10_000,
  };
}

/** Two netns joined by a veth pair; udhcpd on the server side unless `server` is false. */
async function withDhcp(
  name: string,
  server: boolean,
  fn: (clientNs: string, dir: string, stopServer: () => Promise<void>) => Promise<void>,
  domain = "gd.example",
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "guest-dhcp-" });
  const srv = await makeNetns(`gd-${name}-s`);
  const cli = await makeNetns(`gd-${name}-c`);
  let udhcpd: Deno.ChildProcess | undefined;
  try {
    await run("ip", [
      "link",
      "add",
      "gds0",
      "netns",
      srv.name,
      "type",
      "veth",
      "peer",
      "name",
      "gdc0",
      "netns",
      cli.name,
      "address",
      MAC,
    ]);
    await run("ip", ["-n", srv.name, "addr", "add", "10.77.0.1/24", "dev", "gds0"]);
    await run("ip", ["-n", srv.name, "link", "set", "gds0", "up"]);
    if (server) {
      await Deno.writeTextFile(`${dir}/leases`, "");
      await Deno.writeTextFile(
        `${dir}/udhcpd.conf`,
        [
          "start 10.77.0.50",
          "end 10.77.0.60",
          "interface gds0",
          `lease_file ${dir}/leases`,
          `pidfile ${dir}/udhcpd.pid`,
          "min_lease 4",
          "option subnet 255.255.255.0",
          "option router 10.77.0.1",
          "option dns 10.77.0.53 10.77.0.54",
          `option domain ${domain}`,
          "option mtu 1400",
          "option lease 8",
          "",
        ].join("\n"),
      );
      udhcpd = new Deno.Command("ip", {
        args: [
          "netns",
          "exec",
          srv.name,
          "busybox",
          "udhcpd",
          "-f",
          "-a",
          "100",
          `${dir}/udhcpd.conf`,
        ],
        stdout: "null",
        stderr: "null",
      }).spawn();
    }
    const stopServer = async () => {
      if (!udhcpd) return;
      const p = udhcpd;
      udhcpd = undefined;
      p.kill("SIGTERM"); // udhcpd writes its lease file on SIGTERM
      await p.status;
    };
    try {
      await fn(cli.name, dir, stopServer);
    } finally {
      await stopServer();
    }
  } finally {
    await cli.remove();
    await srv.remove();
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("guest dhcp: the client gets, renews and releases a lease from udhcpd", async () => {
  await withDhcp("lease", true, async (ns, dir, stopServer) => {
    const script = `${dir}/client.ts`;
    await Deno.writeTextFile(
      script,
      `
      import { Rtnl } from "${ROOT}guest/rtnl.ts";
      import { parseMac } from "${ROOT}guest/ip.ts";
      import { DhcpClient } from "${ROOT}guest/dhcp_client.ts";
      const r = new Rtnl();
      const l = r.links().find((x) => x.mac === "${MAC}");
      r.linkUp(l.index);
      const cl = new DhcpClient({ ifindex: l.index, ifname: l.name, mac: parseMac(l.mac), timeoutMs: 10000 });
      const lease = await cl.acquire();
      const renewed = await cl.renew(false);
      const rebound = await cl.renew(true);
      cl.release();
      await cl.close();
      console.log(JSON.stringify({ lease, renewed, rebound }));
      `,
    );
    const out = JSON.parse(
      await run("ip", ["netns", "exec", ns, DENO, "run", "-A", "--no-check", script]),
    );
    assert.equal(out.lease.type, 5);
    assert.match(out.lease.ip, /^10\.77\.0\.(5\d|60)$/);
    assert.deepEqual(
      { ...out.lease, ip: "x" },
      {
        type: 5,
        ip: "x",
        prefix: 24,
        routers: ["10.77.0.1"],
        dns: ["10.77.0.53", "10.77.0.54"],
        domain: "gd.example",
        mtu: 1400,
        leaseSecs: 8,
        t1: 4,
        t2: 7,
        serverId: "10.77.0.1",
      },
    );
    assert.equal(out.renewed?.ip, out.lease.ip, "unicast renewal is ACKed");
    assert.equal(out.rebound?.ip, out.lease.ip, "broadcast rebinding is ACKed");
    await stopServer();
    const leases = await run("busybox", ["dumpleases", "-f", `${dir}/leases`]);
    const row = leases.split("\n").find((l) => l.startsWith(MAC));
    assert.ok(row, leases);
    assert.match(
      row,
      new RegExp(`${out.lease.ip.replace(/\./g, "\\.")}\\s.*expired`),
      "RELEASE ended the lease",
    );
  });
});

Deno.test("guest dhcp: the init configures address, MTU, default route, resolv.conf from DHCP and renews", async () => {
  await withLoopRootfs("guest-dhcp-root-", async ({ device }) => {
    await withDhcp("init", true, async (ns, dhcpDir, stopServer) => {
      const r = await runGuest({
        prefix: inNetns(ns),
        // Outlives T1 (4 s) so the background renewal runs; the address must still be there.
        config: dhcpGuestConfig(device, [
          "sh",
          "-c",
          "ip -o -4 addr show dev gdc0; ip route; cat /etc/resolv.conf; sleep 5.5; ip -o -4 addr show dev gdc0",
        ]),
      });
      assert.equal(r.code, 0, r.stderr);
      const report = r.json<GuestNetworkReport>(MsgType.NETWORK)!;
      const ip = report.interfaces[0].addrs[0];
      assert.match(ip, /^10\.77\.0\.\d+\/24$/);
      assert.equal(report.interfaces[0].mtu, 1400);
      assert.equal(report.defaultGateway, "10.77.0.1");
      assert.deepEqual(report.nameservers, ["10.77.0.53", "10.77.0.54"]);
      const out = r.stdoutOf();
      assert.match(out, new RegExp(`inet ${ip.replace(/\./g, "\\.")} `));
      assert.match(out, /default via 10\.77\.0\.1 dev gdc0/);
      assert.match(out, /search gd\.example\nnameserver 10\.77\.0\.53\nnameserver 10\.77\.0\.54\n/);
      const lines = out.split("\n").filter((l) => l.includes("inet "));
      assert.equal(lines.length, 2, out);
      assert.match(lines[1], /valid_lft [5-8]sec/, "lifetime refreshed by the renewal at T1");
      const logs = r.frames.filter((f) => f.type === MsgType.LOG).map((f) =>
        new TextDecoder().decode(f.payload)
      );
      assert.ok(logs.some((l) => /renewed 10\.77\.0\.\d+ lease 8s/.test(l)), logs.join("\n"));
      await stopServer();
      const leases = await run("busybox", ["dumpleases", "-f", `${dhcpDir}/leases`]);
      assert.match(
        leases,
        new RegExp(`${MAC}.*expired`),
        `init sent RELEASE on shutdown:\n${leases}`,
      );
    });
  });
});

Deno.test("guest dhcp: no server within dhcpTimeoutMs is the dhcp_timeout error, not a success", async () => {
  await withLoopRootfs("guest-dhcp-root-", async ({ device }) => {
    await withDhcp("none", false, async (ns) => {
      const r = await runGuest({
        prefix: inNetns(ns),
        config: dhcpGuestConfig(device, ["true"], { env: [], dhcpTimeoutMs: 1500 }),
      });
      assert.equal(r.code, GUEST_EXIT.dhcp_timeout, r.stderr);
      const e = r.json<GuestError>(MsgType.ERROR)!;
      assert.equal(e.kind, "dhcp_timeout");
      assert.match(e.message, /DHCP on gdc0: no lease within 1500 ms \(no OFFER\)/);
      assert.match(r.stderr, /nerdbox-init: ERROR dhcp_timeout/);
      assert.equal(r.json(MsgType.NETWORK), undefined);
      assert.equal(r.json(MsgType.STARTED), undefined);
    });
  });
});

// A DHCP server is untrusted: its option 15 ends up in the container's resolv.conf, so a value
// that is not a domain name is dropped (and said in a LOG line), never written there.
Deno.test("guest dhcp: a domain that is not a domain name from udhcpd is dropped and logged", async () => {
  await withLoopRootfs("guest-dhcp-root-", async ({ device }) => {
    await withDhcp("evil", true, async (ns) => {
      const r = await runGuest({
        prefix: inNetns(ns),
        config: dhcpGuestConfig(device, ["cat", "/etc/resolv.conf"]),
      });
      assert.equal(r.code, 0, r.stderr);
      assert.equal(
        r.stdoutOf(),
        "# written by nerdbox guest init\nnameserver 10.77.0.53\nnameserver 10.77.0.54\n",
      );
      const logs = r.frames.filter((f) => f.type === MsgType.LOG).map((f) =>
        new TextDecoder().decode(f.payload)
      );
      assert.ok(
        logs.some((l) =>
          /^dhcp gdc0: ignored option 15 \(domain\) "evil_test;options": expected a domain name/
            .test(l)
        ),
        logs.join("\n"),
      );
    }, "evil_test;options");
  });
});
