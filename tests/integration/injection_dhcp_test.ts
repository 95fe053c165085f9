/**
 * Injection from the network into the guest: DHCP options come from whatever answers on the NIC
 * (the provider, or anything that can reach the segment), so their values must not add lines to
 * the files guest init writes. Drives the real guest code (guest/dhcp.ts decode → leaseOf →
 * guest/resolv.ts mergeDns → resolvConf) with server messages a hostile DHCP server would send.
 */
import { deepEqual, equal, ok } from "node:assert/strict";
import { decodeDhcp, DhcpType, encodeDhcp, leaseOf, Opt } from "../../guest/dhcp.ts";
import { mergeDns, resolvConf } from "../../guest/resolv.ts";

function ack(domain: Uint8Array, dns = Uint8Array.of(10, 0, 2, 3)) {
  const options = new Map<number, Uint8Array>([
    [Opt.MSG_TYPE, Uint8Array.of(DhcpType.ACK)],
    [Opt.SUBNET, Uint8Array.of(255, 255, 255, 0)],
    [Opt.ROUTER, Uint8Array.of(10, 0, 2, 2)],
    [Opt.DNS, dns],
    [Opt.DOMAIN, domain],
    [Opt.SERVER_ID, Uint8Array.of(10, 0, 2, 2)],
  ]);
  return decodeDhcp(encodeDhcp({
    op: 2,
    xid: 1,
    secs: 0,
    broadcast: false,
    ciaddr: new Uint8Array(4),
    yiaddr: Uint8Array.of(10, 0, 2, 15),
    siaddr: Uint8Array.of(10, 0, 2, 2),
    chaddr: new Uint8Array(16),
    options,
  }));
}

function resolvFrom(domain: string): string {
  const lease = leaseOf(ack(new TextEncoder().encode(domain)));
  return resolvConf(mergeDns(undefined, {
    nameservers: lease.dns,
    domains: lease.domain ? [lease.domain] : [],
  }));
}

const directives = (text: string) =>
  text.split("\n").filter((l) => l && !l.startsWith("#")).map((l) => l.split(/\s/)[0]);

Deno.test("injection: an ordinary DHCP domain becomes one search line", () => {
  equal(
    resolvFrom("example.test"),
    "# written by nerdbox guest init\nsearch example.test\nnameserver 10.0.2.3\n",
  );
});

// BUG (guest/dhcp.ts leaseOf + guest/resolv.ts resolvConf): option 15 is decoded as free text and
// written into resolv.conf verbatim, so a DHCP server can add any resolv.conf line (a nameserver
// of its choosing, `options` such as ndots/rotate) to the container. RFC 2132 option 15 is a
// domain name: anything that is not a valid name should be dropped (or the lease refused).
for (
  const domain of [
    "evil.test\nnameserver 203.0.113.66",
    "evil.test\n\noptions ndots:15 attempts:0",
  ]
) {
  Deno.test(`injection: DHCP domain ${JSON.stringify(domain)} adds no resolv.conf line`, () => {
    const text = resolvFrom(domain);
    deepEqual(
      directives(text),
      ["search", "nameserver"],
      `resolv.conf from a hostile DHCP domain:\n${text}`,
    );
    ok(!text.includes("203.0.113.66"));
  });
}

Deno.test("injection: DHCP DNS servers are always dotted quads (binary option, no text)", () => {
  const lease = leaseOf(ack(new TextEncoder().encode("x.test"), Uint8Array.of(1, 2, 3, 4, 10, 0)));
  deepEqual(lease.dns, ["1.2.3.4"], "a trailing partial address is dropped");
});
