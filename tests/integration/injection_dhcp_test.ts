/**
 * Injection from the network into the guest: DHCP options come from whatever answers on the NIC
 * (the provider, or anything that can reach the segment), so their values must not add lines to
 * the files guest init writes. Drives the real guest code (guest/dhcp.ts decode → leaseOf →
 * guest/resolv.ts mergeDns → resolvConf) with server messages a hostile DHCP server would send.
 */
import { deepEqual, equal, match, ok, throws } from "node:assert/strict";
import { decodeDhcp, DhcpType, leaseOf, Opt } from "../../guest/dhcp.ts";
import { mergeDns, resolvConf } from "../../guest/resolv.ts";
import { serverReply } from "../helpers/dhcp_reply.ts";

function ack(domain: Uint8Array, dns = Uint8Array.of(10, 0, 2, 3)) {
  return decodeDhcp(serverReply([
    [Opt.MSG_TYPE, Uint8Array.of(DhcpType.ACK)],
    [Opt.SUBNET, Uint8Array.of(255, 255, 255, 0)],
    [Opt.ROUTER, Uint8Array.of(10, 0, 2, 2)],
    [Opt.DNS, dns],
    [Opt.DOMAIN, domain],
    [Opt.SERVER_ID, Uint8Array.of(10, 0, 2, 2)],
  ]));
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
    // The invalid domain is dropped as a whole (no search line): keeping "evil.test" would mean
    // guessing which part of a hostile value was meant.
    deepEqual(
      directives(text),
      ["nameserver"],
      `resolv.conf from a hostile DHCP domain:\n${text}`,
    );
    ok(!text.includes("203.0.113.66"));
    const lease = leaseOf(ack(new TextEncoder().encode(domain)));
    equal(lease.domain, undefined);
    match(
      lease.ignored?.[0] ?? "",
      /^ignored option 15 \(domain\) "evil\.test\\n.*expected a domain name/,
    );
  });
}

for (
  const bad of ["-lead.test", "a..b", "x".repeat(64) + ".test", `${"a.".repeat(127)}ab`, "ex ample"]
) {
  Deno.test(`injection: DHCP domain ${JSON.stringify(bad.slice(0, 40))} is not a domain name`, () => {
    const lease = leaseOf(ack(new TextEncoder().encode(bad)));
    equal(lease.domain, undefined);
    equal(lease.ignored?.length, 1);
  });
}

Deno.test("injection: a 253-byte domain with a trailing NUL is kept", () => {
  const name = `${"a.".repeat(125)}abc`;
  equal(name.length, 253);
  equal(leaseOf(ack(new TextEncoder().encode(`${name}\0`))).domain, name);
});

Deno.test("injection: resolvConf refuses a value that would not stay one word", () => {
  for (
    const d of [
      { nameservers: ["10.0.2.3\nnameserver 203.0.113.66"], search: [], options: [] },
      { nameservers: [], search: ["a.test b.test"], options: [] },
      { nameservers: [], search: [], options: ["ndots:1\roptions rotate"] },
      { nameservers: [], search: ["a\u2028b"], options: [] },
      { nameservers: [""], search: [], options: [] },
    ]
  ) {
    throws(() => resolvConf(d), /^ResolvConfError: resolv\.conf \w+ ".*": expected one word/);
  }
});

Deno.test("injection: DHCP DNS servers are always dotted quads (binary option, no text)", () => {
  const lease = leaseOf(ack(new TextEncoder().encode("x.test"), Uint8Array.of(1, 2, 3, 4, 10, 0)));
  deepEqual(lease.dns, ["1.2.3.4"], "a trailing partial address is dropped");
});
