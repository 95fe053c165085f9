import assert from "node:assert/strict";
import {
  CniResultError,
  parseCidr,
  parseCniResult,
  podAddresses,
} from "../../lib/net/cni_result.ts";

// Shape printed by Debian's bridge plugin 1.1.1 for a 1.0.0 config (observed on this machine).
const BRIDGE_100 = {
  cniVersion: "1.0.0",
  interfaces: [
    { name: "nbxexp0", mac: "3e:41:87:36:5a:dc" },
    { name: "veth62ceaa3d", mac: "de:0a:b5:40:1f:34" },
    { name: "eth0", mac: "9e:53:19:71:6d:b6", sandbox: "/run/netns/nbxexp" },
  ],
  ips: [{ interface: 2, address: "10.213.9.2/24", gateway: "10.213.9.1" }],
  routes: [{ dst: "0.0.0.0/0" }],
  dns: {},
};

Deno.test("cni result: 1.0.0 bridge result parses into typed data", () => {
  const r = parseCniResult(BRIDGE_100, "bridge");
  assert.equal(r.cniVersion, "1.0.0");
  assert.equal(r.interfaces[2].sandbox, "/run/netns/nbxexp");
  assert.deepEqual(r.ips[0], {
    address: { family: 4, address: "10.213.9.2", prefix: 24 },
    gateway: "10.213.9.1",
    interface: 2,
  });
  assert.deepEqual(r.routes, [{
    dst: { family: 4, address: "0.0.0.0", prefix: 0 },
    gw: undefined,
  }]);
  assert.deepEqual(podAddresses(r).map((c) => c.address), ["10.213.9.2"]);
  assert.equal(r.raw, BRIDGE_100);
});

Deno.test("cni result: 0.4.0 with ips[].version and IPv6 canonical form", () => {
  const r = parseCniResult({
    cniVersion: "0.4.0",
    interfaces: [{ name: "eth0", sandbox: "/x" }],
    ips: [
      { version: "4", interface: 0, address: "10.1.0.5/16" },
      { version: "6", interface: 0, address: "FD00:0:0::5/64", gateway: "fd00::1" },
    ],
    dns: { nameservers: ["10.1.0.1"], domain: "pod.local", search: ["a.local"] },
  }, "bridge");
  assert.equal(r.ips[1].address.address, "fd00::5");
  assert.deepEqual(r.dns, {
    nameservers: ["10.1.0.1"],
    search: ["pod.local", "a.local"],
    options: [],
  });
});

Deno.test("cni result: legacy 0.2.0 ip4/ip6 shape", () => {
  const r = parseCniResult({
    cniVersion: "0.2.0",
    ip4: { ip: "10.22.0.2/16", gateway: "10.22.0.1", routes: [{ dst: "0.0.0.0/0" }] },
    dns: {},
  }, "bridge");
  assert.equal(r.ips[0].address.address, "10.22.0.2");
  assert.equal(r.ips[0].gateway, "10.22.0.1");
  assert.equal(r.routes.length, 1);
  assert.equal(r.interfaces.length, 0);
  // no cniVersion at all = legacy too
  assert.equal(parseCniResult({ ip4: { ip: "1.2.3.4/8" } }, "x").ips[0].address.prefix, 8);
});

Deno.test("cni result: out-of-bounds and malformed values are rejected with the field", () => {
  const bad: [unknown, RegExp][] = [
    [
      { ...BRIDGE_100, ips: [{ interface: 3, address: "10.0.0.2/24" }] },
      /ips\[0\]\.interface: index 3 is outside interfaces\[0\.\.2\]/,
    ],
    [{ ...BRIDGE_100, ips: [{ interface: -1, address: "10.0.0.2/24" }] }, /ips\[0\]\.interface/],
    [
      { ...BRIDGE_100, ips: [{ address: "10.0.0.2/33" }] },
      /ips\[0\]\.address: prefix \/33 is out of range/,
    ],
    [{ ...BRIDGE_100, ips: [{ address: "10.0.0.300/24" }] }, /not an IP address/],
    [{ ...BRIDGE_100, ips: [{ address: "10.0.0.2" }] }, /expected ADDRESS\/PREFIX/],
    [{ ...BRIDGE_100, ips: [{ address: "10.0.0.2/24", gateway: "gw" }] }, /ips\[0\]\.gateway/],
    [{ ...BRIDGE_100, ips: [{ version: "6", address: "10.0.0.2/24" }] }, /ips\[0\]\.version/],
    [{ ...BRIDGE_100, interfaces: [{ name: "eth0", mac: "zz:00" }] }, /interfaces\[0\]\.mac/],
    [
      { ...BRIDGE_100, interfaces: [{ name: "a-very-long-interface-name" }] },
      /interfaces\[0\]\.name/,
    ],
    [{ ...BRIDGE_100, routes: [{ dst: "default" }] }, /routes\[0\]\.dst/],
    [{ ...BRIDGE_100, dns: { nameservers: ["x"] } }, /dns\.nameservers\[0\]/],
    ["[]", /expected a JSON object/],
  ];
  for (const [doc, re] of bad) {
    assert.throws(() => parseCniResult(doc, "plugin bridge"), (e: unknown) => {
      assert.ok(e instanceof CniResultError);
      assert.match(e.message, /^CNI result from plugin bridge: /);
      assert.match(e.message, re);
      return true;
    });
  }
});

Deno.test("cni result: parseCidr", () => {
  assert.deepEqual(parseCidr("::/0"), { family: 6, address: "::", prefix: 0 });
  assert.match(parseCidr("1.2.3.4/") as string, /ADDRESS\/PREFIX/);
  assert.match(parseCidr("::1/129") as string, /out of range/);
});

Deno.test("cni result: an IPv6 zone id is refused naming the field", () => {
  const cases: Array<[unknown, RegExp]> = [
    [
      { cniVersion: "0.4.0", ips: [{ version: "6", address: "fd00::%2/64" }] },
      /^CNI result from p: ips\[0\]\.address: "fd00::%2" has an IPv6 zone id/,
    ],
    [
      { cniVersion: "1.0.0", routes: [{ dst: "::/0", gw: "fe80::1%eth0" }] },
      /^CNI result from p: routes\[0\]\.gw: "fe80::1%eth0" has an IPv6 zone id/,
    ],
    [
      { cniVersion: "1.0.0", dns: { nameservers: ["fe80::1%2"] } },
      /^CNI result from p: dns\.nameservers\[0\]: "fe80::1%2" has an IPv6 zone id/,
    ],
  ];
  for (const [doc, re] of cases) {
    assert.throws(
      () => parseCniResult(doc, "p"),
      (e) => e instanceof CniResultError && re.test(e.message),
    );
  }
  assert.match(parseCidr("fe80::1%eth0/64") as string, /zone id/);
});
