/** guest/dhcp.ts codec: exact client bytes, decoding a server ACK, IPv4/UDP wrapping. */
import assert from "node:assert/strict";
import {
  checksum,
  clientMessage,
  decodeDhcp,
  DhcpType,
  encodeDhcp,
  ipUdp,
  leaseOf,
  parseIpUdp,
} from "../../guest/dhcp.ts";
import { parseIPv4, parseMac } from "../../guest/ip.ts";

const MAC = parseMac("52:54:00:12:34:56");
const hex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join(" ");

Deno.test("dhcp: DISCOVER bytes (header, chaddr, magic, client-id, parameter list)", () => {
  const b = encodeDhcp(clientMessage({ type: DhcpType.DISCOVER, xid: 0x12345678, mac: MAC }));
  assert.equal(b.length, 300);
  assert.equal(hex(b.subarray(0, 12)), "01 01 06 00 12 34 56 78 00 00 00 00");
  assert.equal(hex(b.subarray(12, 28)), Array(16).fill("00").join(" "));
  assert.equal(hex(b.subarray(28, 44)), "52 54 00 12 34 56 " + Array(10).fill("00").join(" "));
  assert.equal(hex(b.subarray(236, 240)), "63 82 53 63");
  assert.equal(
    hex(b.subarray(240, 270)),
    "35 01 01 3d 07 01 52 54 00 12 34 56 39 02 05 dc 37 08 01 03 06 0f 1a 33 3a 3b ff 00 00 00",
  );
});

Deno.test("dhcp: REQUEST carries requested IP, server id and hostname; RELEASE has ciaddr", () => {
  const req = decodeDhcp(encodeDhcp(clientMessage({
    type: DhcpType.REQUEST,
    xid: 1,
    mac: MAC,
    requestedIp: parseIPv4("10.0.0.9"),
    serverId: parseIPv4("10.0.0.1"),
    hostname: "box",
  })));
  assert.deepEqual(Array.from(req.options.get(50)!), [10, 0, 0, 9]);
  assert.deepEqual(Array.from(req.options.get(54)!), [10, 0, 0, 1]);
  assert.equal(new TextDecoder().decode(req.options.get(12)), "box");
  const rel = decodeDhcp(
    encodeDhcp(
      clientMessage({ type: DhcpType.RELEASE, xid: 2, mac: MAC, ciaddr: parseIPv4("10.0.0.9") }),
    ),
  );
  assert.deepEqual(Array.from(rel.ciaddr), [10, 0, 0, 9]);
  assert.equal(rel.options.has(55), false);
});

Deno.test("dhcp: decoding a server ACK into a lease (mask, router, DNS, domain, MTU, times)", () => {
  const b = new Uint8Array(300);
  b.set([2, 1, 6, 0, 0xca, 0xfe, 0xba, 0xbe]);
  b.set([10, 0, 0, 9], 16); // yiaddr
  b.set(MAC, 28);
  b.set([99, 130, 83, 99], 236);
  b.set([
    53,
    1,
    5,
    1,
    4,
    255,
    255,
    255,
    0,
    3,
    4,
    10,
    0,
    0,
    1,
    6,
    8,
    10,
    0,
    0,
    53,
    10,
    0,
    0,
    54,
    0, // pad
    15,
    7,
    ...new TextEncoder().encode("example"),
    26,
    2,
    0x05,
    0x78,
    51,
    4,
    0,
    0,
    0x0e,
    0x10,
    54,
    4,
    10,
    0,
    0,
    1,
    255,
  ], 240);
  const m = decodeDhcp(b);
  assert.equal(m.op, 2);
  assert.equal(m.xid, 0xcafebabe);
  assert.deepEqual(leaseOf(m), {
    type: DhcpType.ACK,
    ip: "10.0.0.9",
    prefix: 24,
    routers: ["10.0.0.1"],
    dns: ["10.0.0.53", "10.0.0.54"],
    domain: "example",
    mtu: 1400,
    leaseSecs: 3600,
    t1: 1800,
    t2: 3150,
    serverId: "10.0.0.1",
  });
  b[237] = 0;
  assert.throws(() => decodeDhcp(b), /magic cookie/);
  assert.throws(() => decodeDhcp(b.subarray(0, 100)), /too short/);
});

Deno.test("dhcp: IPv4/UDP wrapping has valid checksums and round-trips", () => {
  const payload = encodeDhcp(clientMessage({ type: DhcpType.DISCOVER, xid: 7, mac: MAC }));
  const pkt = ipUdp(new Uint8Array(4), Uint8Array.of(255, 255, 255, 255), 68, 67, payload);
  assert.equal(pkt.length, 328);
  assert.equal(hex(pkt.subarray(0, 10)), "45 10 01 48 00 00 00 00 40 11");
  assert.equal(checksum(pkt.subarray(0, 20)), 0, "IP header checksum");
  // UDP checksum over pseudo header + segment sums to zero.
  const pseudo = new Uint8Array(12 + pkt.length - 20);
  pseudo.set(pkt.subarray(12, 20));
  pseudo[9] = 17;
  new DataView(pseudo.buffer).setUint16(10, pkt.length - 20);
  pseudo.set(pkt.subarray(20), 12);
  assert.equal(checksum(pseudo), 0, "UDP checksum");
  const udp = parseIpUdp(pkt)!;
  assert.equal(udp.sport, 68);
  assert.equal(udp.dport, 67);
  assert.deepEqual(udp.payload, payload);
  const bad = pkt.slice();
  bad[10] ^= 1;
  assert.equal(parseIpUdp(bad), null, "bad IP checksum rejected");
  assert.equal(parseIpUdp(pkt.subarray(0, 20)), null);
});
