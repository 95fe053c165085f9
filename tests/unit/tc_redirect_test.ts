/**
 * The pod-interface mode's pure parts: which interface `ip -j` output designates (the IPv4
 * default route's), what is refused and why, when the default network uses it rather than
 * passt, the tap netdev on QEMU's command line, and the DNS handed to the guest.
 */
import { deepEqual, equal, match, ok, throws } from "node:assert/strict";
import { parsePodInterface, TcRedirectError } from "../../lib/net/tc_redirect.ts";
import { podDns, qemuArgv } from "../../lib/vm/qemu.ts";
import { podMode } from "../../lib/vm/plan_network.ts";
import { parseMac } from "../../lib/spec/mac.ts";

const link = (over: Record<string, unknown> = {}) => ({
  ifindex: 2,
  ifname: "eth0",
  mtu: 1450,
  link_type: "ether",
  address: "6E:18:2D:D7:E8:F8",
  addr_info: [
    { family: "inet", local: "10.214.1.2", prefixlen: 24, scope: "global" },
    { family: "inet6", local: "fd00::2", prefixlen: 64, scope: "global" },
    { family: "inet6", local: "fe80::1", prefixlen: 64, scope: "link" },
  ],
  ...over,
});
const lo = { ifname: "lo", mtu: 65536, link_type: "loopback", address: "00:00:00:00:00:00" };
const def = [{ dst: "default", gateway: "10.214.1.1", dev: "eth0" }];

Deno.test("pod interface: the default route's device, its MAC, MTU, global addresses, txqlen", () => {
  const p = parsePodInterface(JSON.stringify([lo, link()]), JSON.stringify(def), "/run/netns/x");
  deepEqual(p, {
    name: "eth0",
    mac: "6e:18:2d:d7:e8:f8",
    mtu: 1450,
    addrs: ["10.214.1.2/24", "fd00::2/64"],
    gateway4: "10.214.1.1",
    txqlen: 0,
  });
  const q = parsePodInterface(
    JSON.stringify([link({ txqlen: 1000 })]),
    JSON.stringify(def),
    "/run/netns/x",
  );
  equal(q.txqlen, 1000);
});

Deno.test("pod interface: refusals name the netns and the reason", () => {
  const cases: [unknown[], unknown[], RegExp][] = [
    [[lo, link()], [], /netns \/run\/netns\/x has no IPv4 default route via a gateway/],
    [[lo, link()], [{ dst: "default", dev: "eth0" }], /no IPv4 default route via a gateway/],
    [[lo], def, /default route device eth0 not found/],
    [[link({ link_type: "none" })], def, /is not an Ethernet interface/],
    [[link({ addr_info: [] })], def, /eth0 has no global IPv4 address/],
    [[link({ mtu: 20 })], def, /mtu 20: expected 68-65535/],
    [[link({ ifname: "eth0; reboot" })], [{ ...def[0], dev: "eth0; reboot" }], /not an Ethernet/],
  ];
  for (const [links, routes, re] of cases) {
    throws(
      () => parsePodInterface(JSON.stringify(links), JSON.stringify(routes), "/run/netns/x"),
      (e: Error) => e instanceof TcRedirectError && re.test(e.message),
    );
  }
  throws(() => parsePodInterface("{", "[]", "/run/netns/x"), /unreadable ip -j output/);
});

Deno.test("default network: pod interface in a netns unless a port needs passt's translation", () => {
  const p = (hostPort: number, guestPort: number, hostIp?: string) => ({
    hostPort,
    guestPort,
    protocol: "tcp" as const,
    ...(hostIp ? { hostIp } : {}),
  });
  equal(podMode(undefined, []), false);
  equal(podMode("/run/netns/x", []), true);
  equal(podMode("/run/netns/x", [p(80, 80)]), true);
  equal(podMode("/run/netns/x", [p(8080, 80)]), false);
  equal(podMode("/run/netns/x", [p(80, 80, "127.0.0.1")]), false);
  equal(podMode("/run/netns/x", [], { passtNoDhcp: true }), false);
});

Deno.test("qemu argv: a tap netdev opened by name, no scripts; a bad name is refused", () => {
  const base = {
    accel: "tcg" as const,
    cpus: 1,
    memoryMiB: 192,
    kernel: "/k",
    initramfs: "/i",
    runtimeDisk: "/r",
    consoleLog: "/c",
  };
  const argv = qemuArgv({
    ...base,
    nics: [{ mac: parseMac("6e:18:2d:d7:e8:f8"), netdev: { kind: "tap", ifname: "nbxt0a1b2c3d" } }],
  });
  ok(argv.includes("tap,id=n0,ifname=nbxt0a1b2c3d,script=no,downscript=no"), argv.join(" "));
  ok(argv.includes("virtio-net-device,netdev=n0,mac=6e:18:2d:d7:e8:f8"));
  throws(
    () =>
      qemuArgv({
        ...base,
        nics: [{
          mac: parseMac("6e:18:2d:d7:e8:f8"),
          netdev: { kind: "tap", ifname: "a,script=/x" },
        }],
      }),
    /network 0: tap "a,script=\/x": expected an interface name/,
  );
});

Deno.test("pod DNS: the netns's resolv.conf first, loopback servers dropped", async () => {
  const name = `nbxpoddns${crypto.randomUUID().slice(0, 6)}`;
  const dir = `/etc/netns/${name}`;
  await Deno.mkdir(dir, { recursive: true });
  try {
    await Deno.writeTextFile(
      `${dir}/resolv.conf`,
      "nameserver 127.0.0.53\nnameserver 10.96.0.10\nsearch svc.cluster.local bad$name\n" +
        "options ndots:5\n",
    );
    deepEqual(await podDns(`/run/netns/${name}`), {
      nameservers: ["10.96.0.10"],
      search: ["svc.cluster.local"],
      options: ["ndots:5"],
    });
    const host = await podDns("/proc/1/ns/net");
    ok(host.nameservers.every((n) => !n.startsWith("127.")));
    match(JSON.stringify(host), /nameservers/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
