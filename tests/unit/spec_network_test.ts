import { deepEqual, equal, ok } from "node:assert/strict";
import { parseNetworkValue } from "../../lib/spec/annotations.ts";
import { formatSpecError } from "../../lib/spec/types.ts";

const KEY = "io.containerd.nerdbox.network.0";
const BASE = "socket=/run/gv.sock,mode=unixgram,mac=02:00:00:00:00:01";

/** Every error of a value, formatted as users see them. */
function errorsOf(value: string): string[] {
  return parseNetworkValue(value, KEY, 0).errors.map(formatSpecError);
}

/** Asserts a value has exactly this one error. */
function oneError(value: string, expected: string): void {
  deepEqual(errorsOf(value), [`${KEY}: ${expected}`]);
}

Deno.test("the minimal network parses with every default", () => {
  const r = parseNetworkValue(BASE, KEY, 3);
  deepEqual(r.errors, []);
  deepEqual(r.warnings, []);
  deepEqual(r.network, {
    index: 3,
    socket: "/run/gv.sock",
    mode: "unixgram",
    mac: "02:00:00:00:00:01",
    dhcp: false,
    addrs: [],
    features: 0,
    featureNames: [],
    vfkit: false,
    vnetHdr: false,
  });
});

Deno.test("every key at once, fields in any order", () => {
  const r = parseNetworkValue(
    "vnet_hdr=false,features=VIRTIO_NET_F_CSUM|VIRTIO_NET_F_HOST_TSO4,addr=fd00::2/64," +
      "addr=10.0.0.2/16,vfkit=T,mac=0A:D6:36:C1:EA:F3,mode=unixgram,socket=/tmp/a.sock",
    KEY,
    0,
  );
  deepEqual(r.errors, []);
  deepEqual(r.network, {
    index: 0,
    socket: "/tmp/a.sock",
    mode: "unixgram",
    mac: "0a:d6:36:c1:ea:f3",
    dhcp: false,
    addrs: [
      { family: 6, address: "fd00::2", prefix: 64 },
      { family: 4, address: "10.0.0.2", prefix: 16 },
    ],
    features: 0x801,
    featureNames: ["VIRTIO_NET_F_CSUM", "VIRTIO_NET_F_HOST_TSO4"],
    vfkit: true,
    vnetHdr: false,
  });
});

Deno.test("the documented gvisor-tap-vsock example: bare addr gets /24 and a warning", () => {
  const r = parseNetworkValue(
    "socket=/tmp/gvisor.sock,mode=unixgram,mac=fa:43:25:5d:6f:b4,addr=192.168.127.2",
    KEY,
    0,
  );
  deepEqual(r.errors, []);
  deepEqual(r.network?.addrs, [{ family: 4, address: "192.168.127.2", prefix: 24 }]);
  deepEqual(r.warnings, [
    `${KEY}: addr=192.168.127.2 has no prefix length; assuming 192.168.127.2/24`,
  ]);
});

Deno.test("a bare IPv6 addr gets /64 and is written canonically", () => {
  const r = parseNetworkValue(`${BASE},addr=FD00:0:0:0::0:2`, KEY, 0);
  deepEqual(r.network?.addrs, [{ family: 6, address: "fd00::2", prefix: 64 }]);
  deepEqual(r.warnings, [`${KEY}: addr=FD00:0:0:0::0:2 has no prefix length; assuming fd00::2/64`]);
});

Deno.test("the documented vmnet-helper example: dhcp=true", () => {
  const r = parseNetworkValue(
    "socket=/tmp/vmnet.sock,mode=unixgram,mac=0a:d6:36:c1:ea:f3,dhcp=true",
    KEY,
    0,
  );
  deepEqual(r.errors, []);
  equal(r.network?.dhcp, true);
});

Deno.test("RFC 4180: a quoted field holds commas and doubled quotes", () => {
  const r = parseNetworkValue(
    '"socket=/tmp/a,b ""c"".sock",mode=unixstream,mac=02:00:00:00:00:01',
    KEY,
    0,
  );
  deepEqual(r.errors, []);
  equal(r.network?.socket, '/tmp/a,b "c".sock');
});

Deno.test("CSV errors: stray quote, unclosed quote, two records, empty value", () => {
  oneError(
    'socket=/tmp/a"b,mode=unixgram,mac=02:00:00:00:00:01',
    "expected one RFC 4180 CSV record: a stray '\"': quote the whole field and double inner " +
      'quotes, e.g. "socket=/a""b"',
  );
  oneError(
    '"socket=/tmp/a,mode=unixgram',
    "expected one RFC 4180 CSV record: a quoted field is never closed",
  );
  oneError(
    `${BASE}\nmode=unixstream`,
    "expected one CSV record, got 2 lines (quote a field that holds a newline)",
  );
  oneError("", "expected one CSV record, got an empty value");
});

Deno.test("fields: empty field, field without '=', unknown key with suggestion, repeats", () => {
  const keys = "socket, mode, mac, dhcp, addr, features, vfkit, vnet_hdr";
  oneError(
    `${BASE},,dhcp=true`,
    `an empty field (two commas in a row, or a trailing comma): expected key=value with a key ` +
      `from ${keys}`,
  );
  oneError(
    `${BASE},dhcp`,
    `dhcp="": this field has no '=': expected key=value with a key from ${keys}`,
  );
  oneError(
    `${BASE},feature=VIRTIO_NET_F_CSUM`,
    `feature="VIRTIO_NET_F_CSUM": unknown key: expected key=value with a key from ${keys}; ` +
      `did you mean "features"?`,
  );
  oneError(
    `${BASE},vnethdr=1`,
    `vnethdr="1": unknown key: expected key=value with a key from ${keys}; did you mean "vnet_hdr"?`,
  );
  oneError(
    `${BASE},colour=red`,
    `colour="red": unknown key: expected key=value with a key from ${keys}`,
  );
  oneError(
    `${BASE},mac=02:00:00:00:00:02`,
    'mac="02:00:00:00:00:02": repeated key: give mac only once',
  );
  oneError(`${BASE},dhcp=1,dhcp=1`, 'dhcp="1": repeated key: give dhcp only once');
});

Deno.test("required keys: socket, mode, mac", () => {
  deepEqual(errorsOf("dhcp=true"), [
    `${KEY}: socket="": missing required key: expected socket=/absolute/path/of/the/provider.sock`,
    `${KEY}: mode="": missing required key: expected mode=unixgram or mode=unixstream`,
    `${KEY}: mac="": missing required key: expected mac=02:00:00:00:00:01 (a unicast MAC)`,
  ]);
});

Deno.test("socket: absolute, no NUL, fits sun_path, leaves room for -krun.sock with unixgram", () => {
  const tail = "mode=unixstream,mac=02:00:00:00:00:01";
  oneError(
    `socket=run/gv.sock,${tail}`,
    `socket="run/gv.sock": expected an absolute path to the provider's UNIX socket`,
  );
  oneError(`socket=,${tail}`, `socket="": expected an absolute path to the provider's UNIX socket`);
  oneError(`socket=/a\0b,${tail}`, `socket="/a\\u0000b": expected a path without NUL bytes`);
  const p107 = "/" + "a".repeat(106);
  deepEqual(errorsOf(`socket=${p107},${tail}`), []);
  oneError(
    `socket=${p107}b,${tail}`,
    `socket="${p107}b": expected at most 107 bytes (the size of sun_path), got 108`,
  );
  const p98 = "/" + "é".repeat(48) + "a"; // 98 bytes in 50 characters
  oneError(
    `socket=${p98},mode=unixgram,mac=02:00:00:00:00:01`,
    `socket="${p98}": with mode=unixgram libkrun also binds "<socket>-krun.sock", which must ` +
      `fit sun_path: expected at most 97 bytes, got 98`,
  );
  deepEqual(errorsOf(`socket=${p98},${tail}`), []);
  deepEqual(errorsOf(`socket=${p98.slice(0, -1)},mode=unixgram,mac=02:00:00:00:00:01`), []);
});

Deno.test("mode: unixgram or unixstream, with a suggestion", () => {
  const expected = "expected unixgram (a SOCK_DGRAM provider such as gvproxy -listen-vfkit) or " +
    "unixstream (a SOCK_STREAM provider such as passt or libgvproxy)";
  oneError(
    "socket=/a,mode=unixstrem,mac=02:00:00:00:00:01",
    `mode="unixstrem": ${expected}; did you mean "unixstream"?`,
  );
  oneError("socket=/a,mode=tap,mac=02:00:00:00:00:01", `mode="tap": ${expected}`);
  oneError(
    "socket=/a,mode=UNIXGRAM,mac=02:00:00:00:00:01",
    `mode="UNIXGRAM": ${expected}; did you mean "unixgram"?`,
  );
  equal(
    parseNetworkValue("socket=/a,mode=unixstream,mac=02:00:00:00:00:01", KEY, 0).network?.mode,
    "unixstream",
  );
});

Deno.test("mac: six hex pairs, unicast, not zero, normalised", () => {
  const pre = "socket=/a,mode=unixgram";
  const shape =
    "expected a MAC address of 6 hex byte pairs separated by ':', e.g. 02:00:00:00:00:01";
  for (
    const bad of [
      "02:00:00:00:00",
      "02:00:00:00:00:01:02",
      "2:0:0:0:0:1",
      "zz:00:00:00:00:01",
      "0200.0000.0001",
      "02:00-00:00:00:01",
    ]
  ) {
    oneError(`${pre},mac=${bad}`, `mac="${bad}": ${shape}`);
  }
  oneError(
    `${pre},mac=00:00:00:00:00:00`,
    'mac="00:00:00:00:00:00": expected a unicast MAC, got the all-zero address',
  );
  oneError(
    `${pre},mac=01:00:5e:00:00:01`,
    'mac="01:00:5e:00:00:01": expected a unicast MAC, got a multicast one (bit 0 of the first byte is set)',
  );
  oneError(
    `${pre},mac=ff:ff:ff:ff:ff:ff`,
    'mac="ff:ff:ff:ff:ff:ff": expected a unicast MAC, got a multicast one (bit 0 of the first byte is set)',
  );
  equal(
    parseNetworkValue(`${pre},mac=5A-94-EF-E4-0C-EE`, KEY, 0).network?.mac,
    "5a:94:ef:e4:0c:ee",
  );
});

Deno.test("booleans: exactly Go's strconv.ParseBool set, for dhcp, vfkit and vnet_hdr", () => {
  const truths = ["1", "t", "T", "TRUE", "true", "True"];
  const lies = ["0", "f", "F", "FALSE", "false", "False"];
  for (const key of ["dhcp", "vfkit", "vnet_hdr"] as const) {
    const prop = key === "vnet_hdr" ? "vnetHdr" : key;
    for (const t of truths) {
      equal(parseNetworkValue(`${BASE},${key}=${t}`, KEY, 0).network?.[prop], true, `${key}=${t}`);
    }
    for (const f of lies) {
      equal(parseNetworkValue(`${BASE},${key}=${f}`, KEY, 0).network?.[prop], false, `${key}=${f}`);
    }
    for (const bad of ["yes", "on", "tRUE", "2", "", " true", "TRUE "]) {
      oneError(
        `${BASE},${key}=${bad}`,
        `${key}=${JSON.stringify(bad)}: expected a boolean: one of 1 t T TRUE true True 0 f F ` +
          `FALSE false False`,
      );
    }
  }
});

Deno.test("addr: CIDR, at most one per family, never with dhcp", () => {
  oneError(
    `${BASE},addr=10.0.0.2/24,addr=10.0.0.3/24`,
    'addr="10.0.0.3/24": a second IPv4 address (the first is 10.0.0.2/24): expected at most one ' +
      "addr per family (one IPv4, one IPv6)",
  );
  oneError(
    `${BASE},addr=fd00::2/64,addr=fd00::3/64`,
    'addr="fd00::3/64": a second IPv6 address (the first is fd00::2/64): expected at most one ' +
      "addr per family (one IPv4, one IPv6)",
  );
  deepEqual(
    errorsOf(`${BASE},addr=10.0.0.2/24,addr=fd00::2/64,addr=10.0.0.3/24`).length,
    1,
  );
  oneError(
    `${BASE},dhcp=true,addr=10.0.0.2/24`,
    'dhcp="true": dhcp=true together with addr: expected either dhcp=true or static addr ' +
      "fields, not both",
  );
  deepEqual(errorsOf(`${BASE},dhcp=false,addr=10.0.0.2/24`), []);
  const v4 = "expected an address with prefix length, e.g. 192.168.127.2/24 or fd00::2/64";
  for (
    const bad of [
      "10.0.0",
      "10.0.0.256/24",
      "010.0.0.1/24",
      "host/24",
      "10.0.0.1/",
      "fe80::1%eth0/64",
      "1:2:3:4:5:6:7:8:9/64",
      "1::2::3/64",
    ]
  ) {
    oneError(
      `${BASE},addr=${bad}`,
      `addr="${bad}": ${
        bad.endsWith("/")
          ? "expected a prefix length from 0 to 32 after '/', e.g. 192.168.127.2/24"
          : v4
      }`,
    );
  }
  oneError(
    `${BASE},addr=10.0.0.2/33`,
    "addr=\"10.0.0.2/33\": expected a prefix length from 0 to 32 after '/', e.g. 192.168.127.2/24",
  );
  oneError(
    `${BASE},addr=10.0.0.2/024`,
    "addr=\"10.0.0.2/024\": expected a prefix length from 0 to 32 after '/', e.g. 192.168.127.2/24",
  );
  oneError(
    `${BASE},addr=fd00::2/129`,
    "addr=\"fd00::2/129\": expected a prefix length from 0 to 128 after '/', e.g. fd00::2/64",
  );
  oneError(
    `${BASE},addr=0.0.0.0/0`,
    'addr="0.0.0.0/0": expected an interface address, got the unspecified address',
  );
  oneError(
    `${BASE},addr=224.0.0.1/4`,
    'addr="224.0.0.1/4": expected a unicast interface address, got a multicast one',
  );
  deepEqual(
    parseNetworkValue(`${BASE},addr=::ffff:10.0.0.1/96`, KEY, 0).network?.addrs,
    [{ family: 6, address: "::ffff:a00:1", prefix: 96 }],
  );
});

Deno.test("features: names, unknown names with suggestions, virtio dependencies", () => {
  const all = "VIRTIO_NET_F_CSUM|VIRTIO_NET_F_GUEST_CSUM|VIRTIO_NET_F_GUEST_TSO4|" +
    "VIRTIO_NET_F_GUEST_TSO6|VIRTIO_NET_F_GUEST_UFO|VIRTIO_NET_F_HOST_TSO4|" +
    "VIRTIO_NET_F_HOST_TSO6|VIRTIO_NET_F_HOST_UFO";
  const r = parseNetworkValue(`${BASE},features=${all}`, KEY, 0);
  equal(r.network?.features, 0x5d83);
  equal(r.network?.featureNames.length, 8);
  equal(
    parseNetworkValue(
      `${BASE},features=VIRTIO_NET_F_GUEST_CSUM|VIRTIO_NET_F_GUEST_CSUM`,
      KEY,
      0,
    ).network?.features,
    2,
  );
  const names = all.replaceAll("|", ", ");
  oneError(
    `${BASE},features=VIRTIO_NET_F_CSUMM`,
    `features="VIRTIO_NET_F_CSUMM": unknown feature "VIRTIO_NET_F_CSUMM"; did you mean ` +
      `"VIRTIO_NET_F_CSUM"?: expected '|'-separated names from ${names}`,
  );
  oneError(
    `${BASE},features=VIRTIO_NET_F_CSUM|`,
    `features="VIRTIO_NET_F_CSUM|": empty feature name (stray '|'): expected '|'-separated ` +
      `names from ${names}`,
  );
  oneError(
    `${BASE},features=3`,
    `features="3": unknown feature "3": expected '|'-separated names from ${names}`,
  );
  for (
    const [f, need] of [
      ["GUEST_TSO4", "GUEST_CSUM"],
      ["GUEST_TSO6", "GUEST_CSUM"],
      ["GUEST_UFO", "GUEST_CSUM"],
      ["HOST_TSO4", "CSUM"],
      ["HOST_TSO6", "CSUM"],
      ["HOST_UFO", "CSUM"],
    ]
  ) {
    oneError(
      `${BASE},features=VIRTIO_NET_F_${f}`,
      `features="VIRTIO_NET_F_${f}": VIRTIO_NET_F_${f} requires VIRTIO_NET_F_${need} ` +
        `(virtio spec 5.1.3.1): add VIRTIO_NET_F_${need}`,
    );
    deepEqual(errorsOf(`${BASE},features=VIRTIO_NET_F_${f}|VIRTIO_NET_F_${need}`), []);
  }
  const two = errorsOf(`${BASE},features=VIRTIO_NET_F_GUEST_UFO|VIRTIO_NET_F_HOST_UFO`);
  deepEqual(two, [
    `${KEY}: features="VIRTIO_NET_F_GUEST_UFO|VIRTIO_NET_F_HOST_UFO": VIRTIO_NET_F_GUEST_UFO ` +
    "requires VIRTIO_NET_F_GUEST_CSUM (virtio spec 5.1.3.1): add VIRTIO_NET_F_GUEST_CSUM; " +
    "VIRTIO_NET_F_HOST_UFO requires VIRTIO_NET_F_CSUM (virtio spec 5.1.3.1): add VIRTIO_NET_F_CSUM",
  ]);
});

Deno.test("vfkit: only with unixgram; vnet_hdr=true warns", () => {
  oneError(
    "socket=/a,mode=unixstream,mac=02:00:00:00:00:01,vfkit=true",
    'vfkit="true": vfkit=true needs mode=unixgram: the VFKT greeting (libkrun NET_FLAG_VFKIT) ' +
      "exists only for datagram sockets",
  );
  deepEqual(errorsOf("socket=/a,mode=unixstream,mac=02:00:00:00:00:01,vfkit=false"), []);
  const r = parseNetworkValue(`${BASE},vnet_hdr=1`, KEY, 0);
  deepEqual(r.errors, []);
  deepEqual(r.warnings, [
    `${KEY}: vnet_hdr=true needs libkrun's NET_FLAG_INCLUDE_VNET_HEADER, which no libkrun ` +
    "release has; the libkrun backend will refuse this network",
  ]);
});

Deno.test("every error is reported at once, each naming its field and value", () => {
  const r = parseNetworkValue(
    "socket=rel,mode=gram,mac=01:00:00:00:00:00,dhcp=maybe,features=NOPE,vfkit=2,bogus=1",
    KEY,
    0,
  );
  equal(r.network, undefined);
  deepEqual(r.errors.map((e) => [e.annotation, e.field, e.value]), [
    [KEY, "bogus", "1"],
    [KEY, "mode", "gram"],
    [KEY, "socket", "rel"],
    [KEY, "mac", "01:00:00:00:00:00"],
    [KEY, "dhcp", "maybe"],
    [KEY, "vfkit", "2"],
    [KEY, "features", "NOPE"],
  ]);
  ok(r.errors.every((e) => e.message.includes("expected")));
});
