import { deepEqual, equal, throws } from "node:assert/strict";
import fc from "fast-check";
import { parse as csvParse } from "csv-parse/sync";
import { formatIp, parseIp } from "../../lib/spec/ip.ts";
import { parseMac } from "../../lib/spec/mac.ts";
import { parseGoBool } from "../../lib/spec/bool.ts";
import { formatCsvRecord, parseCsvRecord } from "../../lib/spec/csv.ts";
import { nearest } from "../../lib/spec/suggest.ts";
import {
  ALL_NET_FEATURES,
  COMPAT_NET_FEATURES,
  featureNames,
  FEATURES,
  formatFeatures,
  parseFeatures,
} from "../../lib/spec/features.ts";
import { parsePort } from "../../lib/spec/ports.ts";
import {
  DEFAULT_CPUS,
  DEFAULT_MEMORY_MIB,
  parseCpus,
  parseMemoryMiB,
} from "../../lib/spec/resources.ts";
import { parseBackend } from "../../lib/spec/backend.ts";
import { SpecValidationError } from "../../lib/spec/types.ts";
import { libkrunNetCall } from "../../lib/spec/libkrun_net.ts";
import { checkSocketPath } from "../../lib/spec/socket_path.ts";
import { FieldError } from "../../lib/spec/field_error.ts";

/** Asserts fn throws a SpecValidationError whose only error is `expected`. */
function throwsSpec(
  fn: () => unknown,
  expected: { annotation: string; value: string; message: string },
) {
  try {
    fn();
  } catch (e) {
    if (!(e instanceof SpecValidationError)) throw e;
    deepEqual(e.errors, [{ ...expected, field: "" }]);
    return;
  }
  throw new Error("expected a SpecValidationError");
}

Deno.test("IP addresses: parse and canonical text (RFC 5952)", () => {
  const cases: [string, string][] = [
    ["192.168.127.2", "192.168.127.2"],
    ["0.0.0.0", "0.0.0.0"],
    ["::", "::"],
    ["::1", "::1"],
    ["FD00:0:0:0:0:0:0:2", "fd00::2"],
    ["2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"],
    ["2001:0db8:0000:0000:0000:0000:0002:0001", "2001:db8::2:1"],
    ["1:0:1:0:1:0:1:0", "1:0:1:0:1:0:1:0"],
    ["1::", "1::"],
    ["::ffff:1.2.3.4", "::ffff:102:304"],
    ["1:2:3:4:5:6:7::", "1:2:3:4:5:6:7:0"],
  ];
  for (const [input, canonical] of cases) equal(formatIp(parseIp(input)), canonical, input);
  for (
    const bad of [
      "1.2.3",
      "1.2.3.4.5",
      "01.2.3.4",
      "256.1.1.1",
      "1.2.3.-4",
      ":::",
      "1::2::3",
      "12345::",
      "::g",
      "fe80::1%eth0",
      "1:2:3:4:5:6:7:8:9",
      ":1",
      "1:",
      "1.2.3.4::",
      "",
    ]
  ) {
    throws(() => parseIp(bad), FieldError, bad);
  }
});

Deno.test("MACs: accepted shapes and normalisation", () => {
  equal(parseMac("FA:43:25:5D:6F:B4"), "fa:43:25:5d:6f:b4");
  equal(parseMac("fa-43-25-5d-6f-b4"), "fa:43:25:5d:6f:b4");
  equal(parseMac("fe:00:00:00:00:00"), "fe:00:00:00:00:00");
  throws(() => parseMac("03:00:00:00:00:01"), /multicast/);
});

Deno.test("Go booleans: exactly strconv.ParseBool's set", () => {
  for (const t of ["1", "t", "T", "TRUE", "true", "True"]) equal(parseGoBool(t), true);
  for (const f of ["0", "f", "F", "FALSE", "false", "False"]) equal(parseGoBool(f), false);
  for (const bad of ["", "yes", "no", "tRuE", "FaLsE", "y", "n", "01", "on"]) {
    throws(() => parseGoBool(bad), {
      message: "expected a boolean: one of 1 t T TRUE true True 0 f F FALSE false False",
    });
  }
});

Deno.test("CSV records round-trip through quoting", () => {
  const fields = ["a", "b,c", 'd"e', "f\ng", "", " h "];
  deepEqual(parseCsvRecord(formatCsvRecord(fields)), fields);
  equal(formatCsvRecord(["x=1", "y=a,b"]), 'x=1,"y=a,b"');
});

Deno.test("nearest key suggestions", () => {
  const keys = ["socket", "mode", "mac", "dhcp", "addr", "features", "vfkit", "vnet_hdr"];
  equal(nearest("sockt", keys), "socket");
  equal(nearest("Socket", keys), "socket");
  equal(nearest("adr", keys), "addr");
  equal(nearest("feat", keys), "features");
  equal(nearest("zzzzzz", keys), undefined);
  equal(nearest("m", keys), undefined);
});

Deno.test("features: constants, names and numbers", () => {
  equal(COMPAT_NET_FEATURES, 19587);
  equal(ALL_NET_FEATURES, 23939);
  equal(Object.values(FEATURES).reduce((a, b) => a | b, 0), ALL_NET_FEATURES);
  deepEqual(Object.values(FEATURES), [1, 2, 128, 256, 1024, 2048, 4096, 16384]);
  equal(parseFeatures(featureNames(COMPAT_NET_FEATURES).join("|")), COMPAT_NET_FEATURES);
  equal(formatFeatures(0), "0");
  equal(formatFeatures(3), "VIRTIO_NET_F_CSUM|VIRTIO_NET_F_GUEST_CSUM");
});

Deno.test("ports: [IP:]HOST:GUEST[/tcp|/udp]", () => {
  deepEqual(parsePort("8080:80"), { hostPort: 8080, guestPort: 80, protocol: "tcp" });
  deepEqual(parsePort("127.0.0.1:8080:80/udp"), {
    hostIp: "127.0.0.1",
    hostPort: 8080,
    guestPort: 80,
    protocol: "udp",
  });
  deepEqual(parsePort("[::1]:53:5353/udp", "-p"), {
    hostIp: "::1",
    hostPort: 53,
    guestPort: 5353,
    protocol: "udp",
  });
  const expected = "expected [IP:]HOST:GUEST[/tcp|/udp] with ports from 1 to 65535, e.g. " +
    "8080:80, 127.0.0.1:8080:80/tcp or [::1]:5353:53/udp";
  for (
    const bad of ["80", "0:80", "65536:80", "80:080", "a:b", "1:2:3:4", "8080:80/", ":80", "80:"]
  ) {
    throwsSpec(() => parsePort(bad, "--publish"), {
      annotation: "--publish",
      value: bad,
      message: `${JSON.stringify(bad)}: ${
        bad.endsWith("/") ? 'unknown protocol "": ' : ""
      }${expected}`,
    });
  }
  throwsSpec(() => parsePort("8080:80/sctp", "-p"), {
    annotation: "-p",
    value: "8080:80/sctp",
    message: `"8080:80/sctp": unknown protocol "sctp": ${expected}`,
  });
  throwsSpec(() => parsePort("1.2.3:8080:80"), {
    annotation: "--publish",
    value: "1.2.3:8080:80",
    message: `"1.2.3:8080:80": host address "1.2.3" is not an IP address: ${expected}`,
  });
  throwsSpec(() => parsePort("[1.2.3.4]:8080:80"), {
    annotation: "--publish",
    value: "[1.2.3.4]:8080:80",
    message: `"[1.2.3.4]:8080:80": brackets are for IPv6 addresses only: ${expected}`,
  });
});

Deno.test("cpus and memory: defaults, accepted forms, errors naming the flag", () => {
  equal(DEFAULT_CPUS, 1);
  equal(DEFAULT_MEMORY_MIB, 512);
  equal(parseCpus("1", "--cpus"), 1);
  equal(parseCpus("255", "--cpus"), 255);
  for (const bad of ["0", "256", "01", "1.0", "", "two", "-1"]) {
    throwsSpec(() => parseCpus(bad, "--cpus"), {
      annotation: "--cpus",
      value: bad,
      message: `${JSON.stringify(bad)}: expected a whole number of vCPUs from 1 to 255`,
    });
  }
  const cases: [string, number][] = [
    ["512", 512],
    ["512M", 512],
    ["512m", 512],
    ["512MiB", 512],
    ["1G", 1024],
    ["2g", 2048],
    ["3GiB", 3072],
    ["128", 128],
    ["1024G", 1048576],
  ];
  for (const [t, mib] of cases) equal(parseMemoryMiB(t, "--memory"), mib, t);
  const expected = "expected MiB as a whole number (512) or with a suffix (512M, 1G), from " +
    "128 MiB to 1024 GiB";
  for (const bad of ["", "1.5G", "512K", "0", "M", "512 M", "-512"]) {
    throwsSpec(() => parseMemoryMiB(bad, "--memory"), {
      annotation: "--memory",
      value: bad,
      message: `${JSON.stringify(bad)}: ${expected}`,
    });
  }
  throwsSpec(() => parseMemoryMiB("127", "--memory"), {
    annotation: "--memory",
    value: "127",
    message: `"127" is 127 MiB: ${expected}`,
  });
  throwsSpec(() => parseMemoryMiB("1025G", "--memory"), {
    annotation: "--memory",
    value: "1025G",
    message: `"1025G" is 1049600 MiB: ${expected}`,
  });
});

Deno.test("backend names", () => {
  equal(parseBackend("qemu", "--backend"), "qemu");
  throwsSpec(() => parseBackend("krun", "--backend"), {
    annotation: "--backend",
    value: "krun",
    message: `"krun": expected one of auto, libkrun, qemu; did you mean "libkrun"?`,
  });
});

Deno.test("the libkrun call a network becomes", () => {
  const base = {
    index: 0,
    socket: checkSocketPath("/tmp/gv.sock", "unixgram"),
    mac: parseMac("02:00:00:00:00:01"),
    dhcp: false,
    addrs: [],
    featureNames: [],
    vnetHdr: false,
  };
  equal(
    libkrunNetCall({ ...base, mode: "unixgram", features: 0, vfkit: true }),
    'krun_add_net_unixgram(ctx, "/tmp/gv.sock", -1, {0x02, 0x00, 0x00, 0x00, 0x00, 0x01}, 0, ' +
      "NET_FLAG_VFKIT /* 1 */)",
  );
  equal(
    libkrunNetCall({ ...base, mode: "unixstream", features: 19587, vfkit: false }),
    'krun_add_net_unixstream(ctx, "/tmp/gv.sock", -1, {0x02, 0x00, 0x00, 0x00, 0x00, 0x01}, ' +
      "19587, 0)",
  );
});

Deno.test("property: the unquoted fast path splits exactly as csv-parse does", () => {
  const text = fc.array(
    fc.oneof(fc.string(), fc.constantFrom(",", "=", " ", "|", "é", "\t")),
    { minLength: 1, maxLength: 10 },
  ).map((a) => a.join("")).filter((t) => t !== "" && !/["\r\n]/.test(t));
  fc.assert(
    fc.property(text, (t) => {
      deepEqual(parseCsvRecord(t), (csvParse(t, { relax_column_count: true }) as string[][])[0]);
    }),
    { numRuns: 1000 },
  );
});
