/** guest/netlink.ts codec: exact request bytes and decoding of kernel-shaped replies. */
import assert from "node:assert/strict";
import {
  addAddrMsg,
  attr,
  decodeAttrs,
  decodeMsgs,
  defaultRouteMsg,
  dumpMsg,
  encodeMsg,
  ifinfomsg,
  IFLA,
  linkUpMsg,
  NLMSG_ERROR,
  parseAddr,
  parseLink,
  RTM,
  u32,
} from "../../guest/netlink.ts";
import { parseCidr, parseIPv4 } from "../../guest/ip.ts";

const hex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join(" ");

Deno.test("netlink: set link up with MTU, exact bytes", () => {
  assert.equal(
    hex(linkUpMsg(7, 3, 1400)),
    "28 00 00 00 10 00 05 00 07 00 00 00 00 00 00 00 " +
      "00 00 00 00 03 00 00 00 01 00 00 00 01 00 00 00 " +
      "08 00 04 00 78 05 00 00",
  );
  assert.equal(linkUpMsg(1, 1).length, 32);
});

Deno.test("netlink: add a permanent no-DAD IPv4 address with broadcast, exact bytes", () => {
  assert.equal(
    hex(addAddrMsg(1, 2, parseCidr("10.0.0.2/24"))),
    "38 00 00 00 14 00 05 05 01 00 00 00 00 00 00 00 " +
      "02 18 82 00 02 00 00 00 " +
      "08 00 02 00 0a 00 00 02 08 00 01 00 0a 00 00 02 " +
      "08 00 04 00 0a 00 00 ff 08 00 08 00 82 00 00 00",
  );
});

Deno.test("netlink: a DHCP address carries its lifetime and is not permanent", () => {
  const msg = addAddrMsg(2, 2, parseCidr("10.0.0.9/32"), { preferred: 600, valid: 600 });
  const [m] = decodeMsgs(msg);
  assert.equal(m.body[2], 0x02); // NODAD only
  const a = decodeAttrs(m.body, 8);
  assert.equal(a.has(4), false, "no broadcast for a /32");
  assert.deepEqual(Array.from(a.get(6)!.subarray(0, 8)), [0x58, 2, 0, 0, 0x58, 2, 0, 0]);
  assert.deepEqual(Array.from(a.get(8)!), [2, 0, 0, 0]);
});

Deno.test("netlink: IPv6 address and default route, exact bytes", () => {
  const v6 = decodeMsgs(addAddrMsg(3, 5, parseCidr("fd00::5/64")))[0];
  assert.equal(hex(v6.body.subarray(0, 8)), "0a 40 82 00 05 00 00 00");
  assert.equal(
    hex(defaultRouteMsg(9, 4, parseIPv4("192.168.1.1"), false)),
    "2c 00 00 00 18 00 05 05 09 00 00 00 00 00 00 00 " +
      "02 00 00 00 fe 03 00 01 00 00 00 00 " +
      "08 00 05 00 c0 a8 01 01 08 00 04 00 04 00 00 00",
  );
  const onlink = decodeMsgs(defaultRouteMsg(1, 4, parseIPv4("10.0.0.1"), true, 16))[0];
  assert.equal(onlink.body[5], 16); // RTPROT_DHCP
  assert.equal(onlink.body[8], 4); // RTNH_F_ONLINK
});

Deno.test("netlink: dump request and decoding of links, addresses, errors", () => {
  assert.equal(hex(dumpMsg(5, RTM.GETLINK).subarray(4, 8)), "12 00 01 03");
  const name = new TextEncoder().encode("eth0\0");
  const link = encodeMsg(RTM.NEWLINK, 2, 5, ifinfomsg(5, 0x1043), [
    attr(IFLA.IFNAME, name),
    attr(IFLA.ADDRESS, Uint8Array.of(0x52, 0x54, 0, 0x12, 0x34, 0x56)),
    attr(IFLA.MTU, u32(65520)),
  ]);
  const errMsg = encodeMsg(NLMSG_ERROR, 0, 5, Uint8Array.of(0xef, 0xff, 0xff, 0xff)); // -17 EEXIST
  const both = new Uint8Array(link.length + errMsg.length);
  both.set(link);
  both.set(errMsg, link.length);
  const [l, e] = decodeMsgs(both);
  assert.deepEqual(parseLink(l.body), {
    index: 5,
    name: "eth0",
    mac: "52:54:00:12:34:56",
    mtu: 65520,
    up: true,
  });
  assert.equal(e.type, NLMSG_ERROR);
  assert.equal(new DataView(e.body.buffer).getInt32(0, true), -17);
  const addr = decodeMsgs(addAddrMsg(1, 9, parseCidr("10.1.2.3/16")))[0];
  assert.deepEqual(parseAddr(addr.body), { index: 9, cidr: "10.1.2.3/16", flags: 0x82 });
  assert.throws(() => decodeMsgs(Uint8Array.of(0x40, 0, 0, 0, ...new Uint8Array(12))), /truncated/);
});

Deno.test("netlink: short or malformed bodies are a clear NetlinkDecodeError", async () => {
  const nl = await import("../../guest/netlink.ts");
  const cases: Array<[() => unknown, RegExp]> = [
    [() => nl.parseLink(new Uint8Array(8)), /RTM_NEWLINK: body of 8 bytes, expected at least 16/],
    [() => nl.parseAddr(new Uint8Array(3)), /RTM_NEWADDR: body of 3 bytes, expected at least 8/],
    [
      () =>
        nl.parseLink(
          Uint8Array.from([...new Uint8Array(16), ...nl.attr(nl.IFLA.MTU, new Uint8Array(2))]),
        ),
      /RTM_NEWLINK: IFLA_MTU of 2 bytes, expected 4/,
    ],
    [
      () =>
        nl.parseAddr(
          Uint8Array.from([
            2,
            24,
            0,
            0,
            1,
            0,
            0,
            0,
            ...nl.attr(nl.IFA.LOCAL, Uint8Array.of(1, 2, 3)),
          ]),
        ),
      /RTM_NEWADDR: address of 3 bytes, expected 4 or 16/,
    ],
  ];
  for (const [fn, re] of cases) {
    assert.throws(fn, (e) => e instanceof nl.NetlinkDecodeError && re.test(e.message));
  }
});
