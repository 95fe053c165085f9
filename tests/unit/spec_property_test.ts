import { deepEqual } from "node:assert/strict";
import fc from "fast-check";
import { networkKey, parseAnnotations, parseNetworkValue } from "../../lib/spec/annotations.ts";
import { formatNetworkValue } from "../../lib/spec/format.ts";
import {
  FEATURE_NAMES,
  FEATURE_REQUIRES,
  featureNames,
  FEATURES,
} from "../../lib/spec/features.ts";
import { formatIp, isMulticast, isUnspecified } from "../../lib/spec/ip.ts";
import type { Cidr, NetMode, NetworkSpec } from "../../lib/spec/types.ts";
import { parseMac } from "../../lib/spec/mac.ts";
import { checkSocketPath } from "../../lib/spec/socket_path.ts";

const utf8Length = (s: string) => new TextEncoder().encode(s).length;

/** Any path text without NUL, including commas, quotes, '=', newlines and non-ASCII. */
const pathChar = fc.oneof(
  fc.constantFrom(",", '"', "=", "\n", "\r", " ", "|", "/", "é", "ü", "雪", "-", "."),
  fc.string({ unit: "grapheme", minLength: 1, maxLength: 1 }).filter((c) => !c.includes("\0")),
);
const socketFor = (mode: NetMode) =>
  fc.array(pathChar, { minLength: 1, maxLength: 60 })
    .map((cs) => "/" + cs.join(""))
    .filter((p) => utf8Length(p) <= (mode === "unixgram" ? 97 : 107));

const mac = fc.uint8Array({ minLength: 6, maxLength: 6 })
  .map((b) => {
    b[0] &= 0xfe;
    return b;
  })
  .filter((b) => b.some((x) => x !== 0))
  .map((b) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join(":"));

const cidr = (family: 4 | 6) =>
  fc.tuple(
    fc.uint8Array({ minLength: family === 4 ? 4 : 16, maxLength: family === 4 ? 4 : 16 }),
    fc.integer({ min: 0, max: family === 4 ? 32 : 128 }),
  )
    .filter(([bytes]) => !isUnspecified({ family, bytes }) && !isMulticast({ family, bytes }))
    .map(([bytes, prefix]): Cidr => ({ family, address: formatIp({ family, bytes }), prefix }));

/** A random set of features closed under the virtio dependency rules. */
const features = fc.subarray([...FEATURE_NAMES]).map((names) => {
  let bits = 0;
  for (const n of names) {
    bits |= FEATURES[n];
    const need = FEATURE_REQUIRES[n];
    if (need) bits |= FEATURES[need];
  }
  return bits;
});

/** A random valid NetworkSpec. */
const networkSpec = fc.constantFrom<NetMode>("unixgram", "unixstream").chain((mode) =>
  fc.record({
    index: fc.nat({ max: 1_000_000 }),
    socket: socketFor(mode),
    mac,
    dhcp: fc.boolean(),
    v4: fc.option(cidr(4)),
    v6: fc.option(cidr(6)),
    v6first: fc.boolean(),
    features,
    vfkit: mode === "unixgram" ? fc.boolean() : fc.constant(false),
    vnetHdr: fc.boolean(),
  }).map((r): NetworkSpec => {
    const addrs = r.dhcp ? [] : [r.v4, r.v6].filter((a): a is Cidr => a !== null);
    if (r.v6first) addrs.reverse();
    return {
      index: r.index,
      socket: checkSocketPath(r.socket, mode),
      mode,
      mac: parseMac(r.mac),
      dhcp: r.dhcp,
      addrs,
      features: r.features,
      featureNames: featureNames(r.features),
      vfkit: r.vfkit,
      vnetHdr: r.vnetHdr,
    };
  })
);

Deno.test("property: parseNetworkValue(formatNetworkValue(spec)) gives the same spec", () => {
  fc.assert(
    fc.property(networkSpec, (spec) => {
      const value = formatNetworkValue(spec);
      const r = parseNetworkValue(value, networkKey(spec.index), spec.index);
      deepEqual(r.errors, [], value);
      deepEqual(r.network, spec, value);
    }),
    { numRuns: 2000 },
  );
});

Deno.test("property: random valid networks come back ordered by index from parseAnnotations", () => {
  const distinct = fc.uniqueArray(networkSpec, {
    maxLength: 5,
    selector: (n) => n.index,
  }).filter((ns) =>
    new Set(ns.map((n) => n.mac)).size === ns.length &&
    new Set(ns.map((n) => n.socket)).size === ns.length
  );
  fc.assert(
    fc.property(distinct, (specs) => {
      const annotations = Object.fromEntries(
        specs.map((n) => [networkKey(n.index), formatNetworkValue(n)]),
      );
      const r = parseAnnotations(annotations);
      deepEqual(r.errors, []);
      deepEqual(r.networks, [...specs].sort((a, b) => a.index - b.index));
    }),
    { numRuns: 300 },
  );
});
