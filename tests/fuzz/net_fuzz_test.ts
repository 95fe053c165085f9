/**
 * Fuzz: the readers of network data that crosses a trust boundary: the CNI result reader
 * (lib/net/cni_result.ts: a plugin's stdout), the guest's DHCP codec (guest/dhcp.ts: packets from
 * whatever answers on the NIC) and its netlink decoders (guest/netlink.ts: kernel replies).
 * Invariant: typed values or a clear error; never a raw TypeError/RangeError.
 */
import { ok } from "node:assert/strict";
import { CniResultError, parseCniResult } from "../../lib/net/cni_result.ts";
import { decodeDhcp, DhcpType, ipUdp, leaseOf, Opt, parseIpUdp } from "../../guest/dhcp.ts";
import {
  addAddrMsg,
  attr,
  decodeAttrs,
  decodeMsgs,
  encodeMsg,
  ifinfomsg,
  IFLA,
  parseAddr,
  parseLink,
  RTM,
  u32,
} from "../../guest/netlink.ts";
import { fuzz, mutateBytes, mutateJson, utf8 } from "./harness.ts";
import { serverReply } from "../helpers/dhcp_reply.ts";

const CNI_RESULTS: unknown[] = [
  {
    cniVersion: "1.0.0",
    interfaces: [{
      name: "eth0",
      mac: "0a:58:0a:00:00:02",
      sandbox: "/var/run/netns/x",
      mtu: 1500,
    }],
    ips: [{ address: "10.88.0.2/16", gateway: "10.88.0.1", interface: 0 }],
    routes: [{ dst: "0.0.0.0/0", gw: "10.88.0.1" }],
    dns: { nameservers: ["10.88.0.1"], search: ["svc.local"], options: ["ndots:5"], domain: "x" },
  },
  { cniVersion: "0.4.0", ips: [{ version: "6", address: "fd00::2/64" }] },
  { cniVersion: "0.2.0", ip4: { ip: "10.0.0.2/24", gateway: "10.0.0.1", routes: [] }, dns: {} },
];

Deno.test("fuzz: parseCniResult throws only CniResultError", async () => {
  await fuzz<unknown>({
    name: "parseCniResult",
    corpus: CNI_RESULTS,
    mutate: (rng, v) => mutateJson(rng, v),
    run: (doc) => {
      const r = parseCniResult(doc, "fuzz-plugin");
      for (const ip of r.ips) ok(ip.address.prefix >= 0 && ip.address.prefix <= 128);
      for (const i of r.interfaces) ok(i.name.length >= 1 && i.name.length <= 15);
    },
    accepts: (e) => e instanceof CniResultError,
    iterations: 5000,
  }, 0xc11);
});

function offer(): Uint8Array {
  return serverReply([
    [Opt.MSG_TYPE, Uint8Array.of(DhcpType.OFFER)],
    [Opt.SUBNET, Uint8Array.of(255, 255, 255, 0)],
    [Opt.ROUTER, Uint8Array.of(10, 0, 2, 2)],
    [Opt.DNS, Uint8Array.of(10, 0, 2, 3, 1, 1, 1, 1)],
    [Opt.DOMAIN, utf8("example.test")],
    [Opt.MTU, Uint8Array.of(0x05, 0xdc)],
    [Opt.LEASE, Uint8Array.of(0, 0, 0x0e, 0x10)],
    [Opt.SERVER_ID, Uint8Array.of(10, 0, 2, 2)],
  ], 0x1234);
}

const IPV4_RE = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;

Deno.test("fuzz: DHCP decode + lease: a well-formed lease or a clear error", async () => {
  const seed = offer();
  await fuzz({
    name: "decodeDhcp/leaseOf",
    corpus: [
      seed,
      ipUdp(Uint8Array.of(10, 0, 2, 2), Uint8Array.of(255, 255, 255, 255), 67, 68, seed),
    ],
    mutate: (rng, b, corpus) => mutateBytes(rng, b, corpus),
    run: (bytes) => {
      const udp = parseIpUdp(bytes);
      const payload = udp ? udp.payload : bytes;
      const lease = leaseOf(decodeDhcp(payload));
      ok(IPV4_RE.test(lease.ip), `lease ip ${lease.ip}`);
      ok(lease.prefix >= 0 && lease.prefix <= 32, `prefix ${lease.prefix}`);
      for (const r of [...lease.routers, ...lease.dns, lease.serverId]) ok(IPV4_RE.test(r), r);
      ok(lease.mtu === undefined || (lease.mtu >= 0 && lease.mtu <= 65535));
      ok(Number.isInteger(lease.leaseSecs) && lease.leaseSecs >= 0);
    },
    accepts: (e) => e instanceof Error && /^DHCP message/.test(e.message),
    iterations: 6000,
  }, 0xd4c9);
});

function linkMsg(): Uint8Array {
  return encodeMsg(RTM.NEWLINK, 0, 1, ifinfomsg(2, 1), [
    attr(IFLA.IFNAME, utf8("eth0\0")),
    attr(IFLA.ADDRESS, Uint8Array.of(2, 0, 0, 0, 0, 1)),
    attr(IFLA.MTU, u32(1500)),
  ]);
}

Deno.test("fuzz: netlink decodeMsgs/decodeAttrs: messages or 'truncated netlink message'", async () => {
  const addr = addAddrMsg(7, 2, { family: 4, addr: Uint8Array.of(10, 0, 0, 2), prefix: 24 });
  await fuzz({
    name: "decodeMsgs",
    corpus: [linkMsg(), addr, new Uint8Array([...linkMsg(), ...addr])],
    mutate: (rng, b, corpus) => mutateBytes(rng, b, corpus),
    run: (bytes) => {
      for (const m of decodeMsgs(bytes)) decodeAttrs(m.body, 16);
    },
    accepts: (e) => e instanceof Error && /^truncated netlink message/.test(e.message),
    iterations: 6000,
  }, 0x9e71);
});

// The kernel is the only peer of these decoders, so a short body cannot normally happen; the
// invariant still holds them to a clear error rather than a RangeError from a DataView.
Deno.test("fuzz: netlink parseLink on mutated RTM_NEWLINK bodies", async () => {
  await fuzz({
    name: "parseLink",
    corpus: [linkMsg().subarray(16)],
    mutate: (rng, b, corpus) => mutateBytes(rng, b, corpus),
    run: (body) => parseLink(body),
    iterations: 4000,
  }, 0x9e72);
});

Deno.test("fuzz: netlink parseAddr on mutated RTM_NEWADDR bodies", async () => {
  const addr = addAddrMsg(7, 2, { family: 4, addr: Uint8Array.of(10, 0, 0, 2), prefix: 24 });
  await fuzz({
    name: "parseAddr",
    corpus: [addr.subarray(16)],
    mutate: (rng, b, corpus) => mutateBytes(rng, b, corpus),
    run: (body) => parseAddr(body),
    iterations: 4000,
  }, 0x9e73);
});

// Found by the long fuzz run (NERDBOX_FUZZ_SEED=3089, iteration 144752): node:net's isIPv6 accepts
// a zone id ("fd00::%2"), and lib/net/cni_result.ts canonical() then throws a raw TypeError from
// `new URL("http://[fd00::%2]/")` instead of a CniResultError naming the field.
Deno.test("CNI result: an IPv6 address with a zone id is a CniResultError, not a TypeError", () => {
  for (
    const doc of [
      { cniVersion: "0.4.0", ips: [{ version: "6", address: "fd00::%2/64" }] },
      { cniVersion: "1.0.0", ips: [{ address: "fd00::2/64", gateway: "fe80::1%eth0" }] },
      { cniVersion: "1.0.0", routes: [{ dst: "::/0", gw: "fe80::1%2" }] },
      { cniVersion: "1.0.0", dns: { nameservers: ["fe80::1%eth0"] } },
    ]
  ) {
    try {
      parseCniResult(doc, "fuzz-plugin");
    } catch (e) {
      ok(e instanceof CniResultError, `${JSON.stringify(doc)}: ${e}`);
    }
  }
});
