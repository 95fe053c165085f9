import { deepEqual, equal, ok } from "node:assert/strict";
import fc from "fast-check";
import { ANNOTATION_PREFIX, parseAnnotations } from "../../lib/spec/annotations.ts";
import { formatSpecError } from "../../lib/spec/types.ts";
import { formatResolvConf } from "../../lib/spec/dns.ts";

const P = ANNOTATION_PREFIX;
const net = (n: number, mac: string, socket = `/run/n${n}.sock`) =>
  `socket=${socket},mode=unixstream,mac=${mac}`;

function errorsOf(a: Record<string, string>): string[] {
  return parseAnnotations(a).errors.map(formatSpecError);
}

Deno.test("the prefix is io.containerd.nerdbox.; other keys are ignored", () => {
  equal(ANNOTATION_PREFIX, "io.containerd.nerdbox.");
  const r = parseAnnotations({
    "nerdctl/network-namespace": "/var/run/netns/x",
    "io.containerd.nerdboxx.network.0": "garbage",
    "io.kubernetes.cri.sandbox-id": "abc",
  });
  deepEqual(r, { networks: [], ctrNetworks: [], resources: {}, warnings: [], errors: [] });
});

Deno.test("networks are ordered by N numerically: network.10 after network.2", () => {
  const r = parseAnnotations({
    [`${P}network.10`]: net(10, "02:00:00:00:00:0a"),
    [`${P}network.2`]: net(2, "02:00:00:00:00:02"),
    [`${P}network.0`]: net(0, "02:00:00:00:00:00"),
  });
  deepEqual(r.errors, []);
  deepEqual(r.networks.map((n) => n.index), [0, 2, 10]);
});

Deno.test("N must be a non-negative decimal integer without leading zeros", () => {
  for (const n of ["01", "-1", "1.5", "", "x", "0x1", " 1", "1e3", "99999999999999999999"]) {
    deepEqual(errorsOf({ [`${P}network.${n}`]: net(0, "02:00:00:00:00:01") }), [
      `${P}network.${n}: network index ${JSON.stringify(n)} in the key: expected a ` +
      "non-negative decimal integer without leading zeros, e.g. network.0",
    ]);
  }
  deepEqual(errorsOf({ [`${P}ctr.network.a`]: "vmmac=02:00:00:00:00:01" }), [
    `${P}ctr.network.a: ctr.network index "a" in the key: expected a non-negative decimal ` +
    "integer without leading zeros, e.g. ctr.network.0",
  ]);
});

Deno.test("unknown nerdbox keys are errors with the nearest key", () => {
  const known = "unknown nerdbox annotation: expected io.containerd.nerdbox.network.N, " +
    "ctr.network.N, ctr.dns, resources.cpu, resources.memory, backend or publish";
  deepEqual(errorsOf({ [`${P}networks.3`]: "x" }), [
    `${P}networks.3: ${known}; did you mean "${P}network.3"?`,
  ]);
  deepEqual(errorsOf({ [`${P}resources.cpus`]: "2" }), [
    `${P}resources.cpus: ${known}; did you mean "${P}resources.cpu"?`,
  ]);
  deepEqual(errorsOf({ [`${P}ctr.dnss`]: "x" }), [
    `${P}ctr.dnss: ${known}; did you mean "${P}ctr.dns"?`,
  ]);
  deepEqual(errorsOf({ [`${P}backends`]: "qemu" }), [
    `${P}backends: ${known}; did you mean "${P}backend"?`,
  ]);
  deepEqual(errorsOf({ [`${P}something-else`]: "x" }), [`${P}something-else: ${known}`]);
});

Deno.test("the same MAC or the same socket on two networks is an error", () => {
  deepEqual(
    errorsOf({
      [`${P}network.0`]: net(0, "02:00:00:00:00:01", "/run/a.sock"),
      [`${P}network.1`]: net(1, "02:00:00:00:00:01", "/run/b.sock"),
      [`${P}network.2`]: net(2, "02:00:00:00:00:02", "/run/a.sock"),
    }),
    [
      `${P}network.1: mac="02:00:00:00:00:01": the same mac as ${P}network.0: expected every ` +
      "network to have its own MAC",
      `${P}network.2: socket="/run/a.sock": the same socket as ${P}network.0: expected every ` +
      "network to have its own provider socket",
    ],
  );
  // Case differences do not hide a duplicate MAC.
  equal(
    errorsOf({
      [`${P}network.0`]: net(0, "02:00:00:00:00:AB"),
      [`${P}network.1`]: net(1, "02:00:00:00:00:ab"),
    }).length,
    1,
  );
});

Deno.test("errors of several annotations are all reported", () => {
  const r = parseAnnotations({
    [`${P}network.0`]: "socket=x,mode=unixgram,mac=02:00:00:00:00:01",
    [`${P}network.1`]: "socket=/a,mode=y,mac=02:00:00:00:00:02",
    [`${P}resources.cpu`]: "0",
    [`${P}backend`]: "firecracker",
    [`${P}bogus`]: "1",
  });
  deepEqual(r.errors.map((e) => e.annotation).sort(), [
    `${P}backend`,
    `${P}bogus`,
    `${P}network.0`,
    `${P}network.1`,
    `${P}resources.cpu`,
  ]);
});

Deno.test("resources.cpu and resources.memory", () => {
  deepEqual(
    parseAnnotations({ [`${P}resources.cpu`]: "4", [`${P}resources.memory`]: "2G" }).resources,
    { cpus: 4, memoryMiB: 2048 },
  );
  equal(parseAnnotations({ [`${P}resources.memory`]: "768" }).resources.memoryMiB, 768);
  deepEqual(errorsOf({ [`${P}resources.cpu`]: "1.5" }), [
    `${P}resources.cpu: "1.5": expected a whole number of vCPUs from 1 to 255`,
  ]);
  deepEqual(errorsOf({ [`${P}resources.memory`]: "64" }), [
    `${P}resources.memory: "64" is 64 MiB: expected MiB as a whole number (512) or with a ` +
    "suffix (512M, 1G), from 128 MiB to 1024 GiB",
  ]);
});

Deno.test("backend: auto, libkrun or qemu", () => {
  for (const b of ["auto", "libkrun", "qemu"]) {
    equal(parseAnnotations({ [`${P}backend`]: b }).backend, b);
  }
  deepEqual(errorsOf({ [`${P}backend`]: "QEMU" }), [
    `${P}backend: "QEMU": expected one of auto, libkrun, qemu; did you mean "qemu"?`,
  ]);
  deepEqual(errorsOf({ [`${P}backend`]: "libkrn" }), [
    `${P}backend: "libkrn": expected one of auto, libkrun, qemu; did you mean "libkrun"?`,
  ]);
});

Deno.test("ctr.network: every field", () => {
  const r = parseAnnotations({
    [`${P}network.0`]: net(0, "02:00:00:00:00:01"),
    [`${P}network.1`]: net(1, "02:00:00:00:00:03"),
    [`${P}ctr.network.1`]: "vmmac=02:00:00:00:00:01,mac=0A:00:00:00:00:02,addr=10.1.0.2/24," +
      "addr=fd01::2/64,addr=10.2.0.2/16,ifname=ctr%d,gw=10.1.0.1,gw=fd01::1",
    [`${P}ctr.network.0`]: "vmmac=02:00:00:00:00:03",
  });
  deepEqual(r.errors, []);
  deepEqual(r.warnings, []);
  deepEqual(r.ctrNetworks, [
    { index: 0, vmmac: "02:00:00:00:00:03", addrs: [], gateways: [] },
    {
      index: 1,
      vmmac: "02:00:00:00:00:01",
      mac: "0a:00:00:00:00:02",
      addrs: [
        { family: 4, address: "10.1.0.2", prefix: 24 },
        { family: 6, address: "fd01::2", prefix: 64 },
        { family: 4, address: "10.2.0.2", prefix: 16 },
      ],
      ifname: "ctr%d",
      gateways: ["10.1.0.1", "fd01::1"],
    },
  ]);
});

Deno.test("ctr.network: vmmac is required and must match a VM network", () => {
  deepEqual(errorsOf({ [`${P}ctr.network.0`]: "ifname=eth0" }), [
    `${P}ctr.network.0: vmmac="": missing required key: expected vmmac=<the mac of a VM network>`,
  ]);
  deepEqual(
    errorsOf({
      [`${P}network.0`]: net(0, "02:00:00:00:00:01"),
      [`${P}network.1`]: net(1, "02:00:00:00:00:02"),
      [`${P}ctr.network.0`]: "vmmac=02:00:00:00:00:03",
    }),
    [
      `${P}ctr.network.0: vmmac="02:00:00:00:00:03": matches no VM network: expected the mac ` +
      `of an ${P}network.N (02:00:00:00:00:01, 02:00:00:00:00:02)`,
    ],
  );
  deepEqual(errorsOf({ [`${P}ctr.network.0`]: "vmmac=02:00:00:00:00:03" }), [
    `${P}ctr.network.0: vmmac="02:00:00:00:00:03": matches no VM network: expected the mac ` +
    `of an ${P}network.N (there are none)`,
  ]);
  // When the VM network itself is invalid, only its own errors are reported.
  deepEqual(
    errorsOf({
      [`${P}network.0`]: "socket=/a,mode=bad,mac=02:00:00:00:00:01",
      [`${P}ctr.network.0`]: "vmmac=02:00:00:00:00:01",
    }).length,
    1,
  );
  deepEqual(
    errorsOf({
      [`${P}network.0`]: net(0, "02:00:00:00:00:01"),
      [`${P}ctr.network.0`]: "vmmac=02-00-00-00-00-01",
    }),
    [],
  );
});

Deno.test("ctr.network: field errors", () => {
  const vm = { [`${P}network.0`]: net(0, "02:00:00:00:00:01") };
  const one = (value: string) => errorsOf({ ...vm, [`${P}ctr.network.0`]: value });
  const K = `${P}ctr.network.0`;
  const V = "vmmac=02:00:00:00:00:01";
  deepEqual(one(`${V},mac=01:00:00:00:00:01`), [
    `${K}: mac="01:00:00:00:00:01": expected a unicast MAC, got a multicast one (bit 0 of ` +
    "the first byte is set)",
  ]);
  deepEqual(one(`${V},mac=02:00:00:00:00:02,mac=02:00:00:00:00:03`), [
    `${K}: mac="02:00:00:00:00:03": repeated key: give mac only once`,
  ]);
  deepEqual(one(`${V},gw=10.0.0.1,gw=10.0.0.2,addr=10.0.0.5/24`), [
    `${K}: gw="10.0.0.2": a second IPv4 gateway: expected at most one gw per family`,
  ]);
  deepEqual(one(`${V},gw=224.0.0.1`), [`${K}: gw="224.0.0.1": expected a unicast gateway address`]);
  deepEqual(one(`${V},gw=router`), [
    `${K}: gw="router": expected an IPv4 address (e.g. 192.168.127.2) or an IPv6 address ` +
    "(e.g. fd00::2)",
  ]);
  deepEqual(one(`${V},addr=10.0.0.2/24,addr=10.0.0.2/16`), [
    `${K}: addr="10.0.0.2/16": the same address twice: expected each addr once`,
  ]);
  deepEqual(one(`${V},vmnac=1`), [
    `${K}: vmnac="1": unknown key: expected key=value with a key from vmmac, mac, addr, ` +
    'ifname, gw; did you mean "vmmac"?',
  ]);
  const r = parseAnnotations({ ...vm, [`${P}ctr.network.0`]: `${V},addr=10.0.0.2,gw=10.9.0.1` });
  deepEqual(r.warnings, [
    `${K}: addr=10.0.0.2 has no prefix length; assuming 10.0.0.2/24`,
    `${K}: gw=10.9.0.1 is in none of this interface's addr subnets`,
  ]);
});

Deno.test("ctr.network: ifname rules (≤15 bytes, no / : whitespace, at most one %d)", () => {
  const vm = { [`${P}network.0`]: net(0, "02:00:00:00:00:01") };
  const K = `${P}ctr.network.0`;
  const one = (ifname: string) =>
    errorsOf({ ...vm, [K]: `vmmac=02:00:00:00:00:01,ifname=${ifname}` });
  for (const good of ["eth0", "eth%d", "%d", "a".repeat(15), "ctr-1_x.y", "é".repeat(7)]) {
    deepEqual(one(good), [], good);
  }
  const cases: [string, string][] = [
    ["", "expected an interface name such as eth0 or eth%d"],
    ["a".repeat(16), "expected at most 15 bytes (IFNAMSIZ - 1), got 16"],
    ["é".repeat(8), "expected at most 15 bytes (IFNAMSIZ - 1), got 16"],
    [".", 'expected a name other than "." or ".."'],
    ["..", 'expected a name other than "." or ".."'],
    ["eth/0", "expected an interface name without '/', ':' or whitespace"],
    ["eth:0", "expected an interface name without '/', ':' or whitespace"],
    ["eth 0", "expected an interface name without '/', ':' or whitespace"],
    ["eth\t0", "expected an interface name without '/', ':' or whitespace"],
    ["eth%d%d", "expected at most one %d"],
    ["eth%s", "expected '%' only as part of %d"],
    ["eth%", "expected '%' only as part of %d"],
  ];
  for (const [name, msg] of cases) {
    deepEqual(one(name), [`${K}: ifname=${JSON.stringify(name)}: ${msg}`], name);
  }
  deepEqual(
    errorsOf({
      ...vm,
      [`${P}network.1`]: net(1, "02:00:00:00:00:02"),
      [K]: "vmmac=02:00:00:00:00:01,ifname=eth1",
      [`${P}ctr.network.1`]: "vmmac=02:00:00:00:00:02,ifname=eth1",
    }),
    [
      `${P}ctr.network.1: ifname="eth1": the same ifname as ${K}: expected a name of its own`,
    ],
  );
  deepEqual(
    errorsOf({
      ...vm,
      [`${P}network.1`]: net(1, "02:00:00:00:00:02"),
      [K]: "vmmac=02:00:00:00:00:01,mac=02:00:00:00:00:09",
      [`${P}ctr.network.1`]: "vmmac=02:00:00:00:00:02,mac=02:00:00:00:00:09",
    }),
    [
      `${P}ctr.network.1: mac="02:00:00:00:00:09": the same mac as ${K}: expected a MAC of its own`,
    ],
  );
});

Deno.test("ctr.dns: fields become resolv.conf lines", () => {
  const r = parseAnnotations({
    [`${P}ctr.dns`]: "nameserver=192.168.127.1,nameserver=2001:4860:4860:0:0:0:0:8888," +
      "search=example.com,search=corp.example.,domain=example.com,options=ndots:2," +
      "options=rotate",
  });
  deepEqual(r.errors, []);
  deepEqual(r.dns, {
    nameservers: ["192.168.127.1", "2001:4860:4860::8888"],
    search: ["example.com", "corp.example."],
    options: ["ndots:2", "rotate"],
    domain: "example.com",
  });
  equal(
    formatResolvConf(r.dns!),
    "nameserver 192.168.127.1\nnameserver 2001:4860:4860::8888\ndomain example.com\n" +
      "search example.com corp.example.\noptions ndots:2 rotate\n",
  );
});

Deno.test("ctr.dns: every bad field is an error; a fourth nameserver warns", () => {
  const K = `${P}ctr.dns`;
  const domain = "expected a domain name such as example.com (dot-separated labels of letters, " +
    "digits and '-', at most 63 bytes each, 253 in all)";
  deepEqual(
    errorsOf({
      [K]: "nameserver=1.1.1,nameserver=0.0.0.0,search=a b,search=-x.com,options=ndots:2 rotate," +
        'options=x;y,"domain=a\nnameserver 6.6.6.6",domain=b.com,domain=c.com,resolver=1.1.1.1',
    }),
    [
      `${K}: domain="b.com": repeated key: give domain only once`,
      `${K}: domain="c.com": repeated key: give domain only once`,
      `${K}: resolver="1.1.1.1": unknown key: expected key=value with a key from nameserver, ` +
      "search, options, domain",
      `${K}: nameserver="1.1.1": expected an IPv4 address (e.g. 192.168.127.2) or an IPv6 ` +
      "address (e.g. fd00::2)",
      `${K}: nameserver="0.0.0.0": expected a unicast nameserver address`,
      `${K}: search="a b": expected one domain per search field (give search= again)`,
      `${K}: search="-x.com": ${domain}`,
      `${K}: options="ndots:2 rotate": expected one option per options field (give options= again)`,
      `${K}: options="x;y": expected a resolv.conf option such as ndots:2, timeout:1 or rotate`,
      `${K}: domain="a\\nnameserver 6.6.6.6": expected one domain per domain field (give domain= again)`,
    ],
  );
  deepEqual(errorsOf({ [K]: `search=${"a".repeat(64)}.com` }), [
    `${K}: search="${"a".repeat(64)}.com": ${domain}`,
  ]);
  const r = parseAnnotations({
    [K]: "nameserver=1.1.1.1,nameserver=1.0.0.1,nameserver=8.8.8.8,nameserver=8.8.4.4",
  });
  deepEqual(r.errors, []);
  deepEqual(r.warnings, [`${K}: 4 nameservers; resolvers use only the first 3`]);
});

Deno.test("parseAnnotations never throws, whatever the input", () => {
  const key = fc.oneof(
    fc.constantFrom(
      `${P}network.0`,
      `${P}network.1`,
      `${P}ctr.network.0`,
      `${P}ctr.dns`,
      `${P}resources.cpu`,
      `${P}resources.memory`,
      `${P}backend`,
    ),
    fc.string().map((s) => `${P}${s}`),
  );
  const piece = fc.oneof(
    fc.string(),
    fc.constantFrom(
      "socket=/a",
      "mode=unixgram",
      "mac=02:00:00:00:00:01",
      "addr=10.0.0.1",
      "features=VIRTIO_NET_F_CSUM",
      '"',
      ",",
      "=",
      "\n",
      "vmmac=02:00:00:00:00:01",
      "nameserver=::1",
    ),
  );
  const value = fc.array(piece, { maxLength: 8 }).map((a) => a.join(","));
  fc.assert(
    fc.property(fc.dictionary(key, value, { maxKeys: 6 }), (a) => {
      const r = parseAnnotations(a);
      ok(Array.isArray(r.errors) && Array.isArray(r.warnings));
      for (const e of r.errors) ok(typeof e.message === "string" && e.message.length > 0);
    }),
    { numRuns: 500 },
  );
});
