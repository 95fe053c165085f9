/** guest/: address parsing, GuestConfig checking, resolv.conf/hosts text, program resolution. */
import assert from "node:assert/strict";
import { contains, formatIp, maskToPrefix, parseCidr, parseIPv6 } from "../../guest/ip.ts";
import { parseConfig } from "../../guest/config.ts";
import { hostsFile, mergeDns, resolvConf } from "../../guest/resolv.ts";
import { envRecord, ExecError, resolveProgram } from "../../guest/workload.ts";
import { firstHost } from "../../guest/network.ts";

Deno.test("ip: CIDR and IPv6 parsing/formatting, masks, containment", () => {
  assert.deepEqual(parseCidr("10.1.2.3/8"), {
    family: 4,
    addr: Uint8Array.of(10, 1, 2, 3),
    prefix: 8,
  });
  assert.equal(formatIp(parseIPv6("fd00::5")), "fd00::5");
  assert.equal(formatIp(parseIPv6("2001:db8:0:0:1:0:0:1")), "2001:db8::1:0:0:1");
  assert.equal(formatIp(parseIPv6("::1")), "::1");
  assert.throws(
    () => parseCidr("10.0.0.1"),
    /invalid CIDR "10\.0\.0\.1": expected ADDRESS\/PREFIX/,
  );
  assert.throws(() => parseCidr("10.0.0.256/24"), /invalid IPv4 address "10\.0\.0\.256"/);
  assert.throws(() => parseCidr("10.0.0.1/33"), /prefix 33 exceeds 32/);
  assert.throws(() => parseIPv6("1::2::3"), /invalid IPv6/);
  assert.equal(maskToPrefix(Uint8Array.of(255, 255, 240, 0)), 20);
  assert.equal(contains(parseCidr("10.1.0.0/16"), Uint8Array.of(10, 1, 200, 1)), true);
  assert.equal(contains(parseCidr("10.1.0.0/16"), Uint8Array.of(10, 2, 0, 1)), false);
  assert.equal(formatIp(firstHost(parseCidr("192.168.127.2/24"))), "192.168.127.1");
});

const good = {
  version: 1,
  hostname: "h",
  rootfs: { kind: "block", device: "/dev/vdb", fstype: "ext4" },
  process: { args: ["sh"], env: [], cwd: "/", uid: 0, gid: 0, terminal: false },
  networks: [{ mac: "52:54:00:AA:BB:CC", dhcp: true, addrs: [], defaultRoute: true }],
  dhcpTimeoutMs: 1000,
};

Deno.test("config: a good config parses; MACs are lower-cased", () => {
  const cfg = parseConfig(JSON.stringify(good));
  assert.equal(cfg.networks[0].sent.mac, "52:54:00:aa:bb:cc");
  assert.deepEqual(cfg.networks[0].mac, Uint8Array.of(0x52, 0x54, 0, 0xaa, 0xbb, 0xcc));
  assert.deepEqual(cfg.rootfs, { kind: "block", device: "/dev/vdb", fstype: "ext4" });
});

Deno.test("config: errors name the field, the value and what was expected", () => {
  const bad = (patch: Record<string, unknown>) => JSON.stringify({ ...good, ...patch });
  assert.throws(() => parseConfig("{"), /GuestConfig\. = "\{": expected JSON/);
  assert.throws(() => parseConfig(bad({ version: 2 })), /GuestConfig\.version = 2: expected 1/);
  assert.throws(
    () => parseConfig(bad({ rootfs: { kind: "nfs" } })),
    /GuestConfig\.rootfs\.kind = "nfs": expected "virtiofs", "block" or "layers"/,
  );
  assert.throws(
    () => parseConfig(bad({ rootfs: { kind: "layers", devices: ["/dev/vdb", "/etc/passwd"] } })),
    /GuestConfig\.rootfs\.devices = "\/etc\/passwd": expected a \/dev\/ path/,
  );
  assert.throws(
    () => parseConfig(bad({ rootfs: { kind: "layers", devices: [] } })),
    /GuestConfig\.rootfs\.devices = \[\]: expected 1-128 \/dev\/ paths/,
  );
  assert.throws(
    () => parseConfig(bad({ networks: [{ ...good.networks[0], mac: "zz" }] })),
    /GuestConfig\.networks\[0\]\.mac = "zz": expected a MAC/,
  );
  assert.throws(
    () => parseConfig(bad({ networks: [{ ...good.networks[0], addrs: ["1.2.3.4"] }] })),
    /GuestConfig\.networks\[0\]\.addrs\[0\] = "1\.2\.3\.4": expected an ADDRESS\/PREFIX/,
  );
  assert.throws(
    () => parseConfig(bad({ process: { ...good.process, args: [] } })),
    /GuestConfig\.process\.args = \[\]: expected at least the program/,
  );
  assert.throws(
    () => parseConfig(bad({ process: { ...good.process, uid: -1 } })),
    /GuestConfig\.process\.uid = -1: expected an integer/,
  );
});

Deno.test("resolv: configured DNS wins; else DHCP's; text forms", () => {
  const dhcp = { nameservers: ["10.0.0.53", "10.0.0.53", "10.0.0.54"], domains: ["lan"] };
  assert.deepEqual(mergeDns(undefined, dhcp), {
    nameservers: ["10.0.0.53", "10.0.0.54"],
    search: ["lan"],
    options: [],
  });
  assert.deepEqual(
    mergeDns({ nameservers: ["1.1.1.1"], search: [], options: ["ndots:1"] }, dhcp),
    { nameservers: ["1.1.1.1"], search: ["lan"], options: ["ndots:1"] },
  );
  assert.equal(
    resolvConf({ nameservers: ["1.1.1.1"], search: ["a", "b"], options: ["ndots:1"] }),
    "# written by nerdbox guest init\nsearch a b\nnameserver 1.1.1.1\noptions ndots:1\n",
  );
  assert.equal(
    hostsFile("web.example", "10.0.0.2"),
    "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n10.0.0.2\tweb.example web\n",
  );
  assert.match(hostsFile("solo"), /127\.0\.1\.1\tsolo\n$/);
});

Deno.test("workload: program resolution like execvp (127 not found, 126 not executable)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "guest-resolve-" });
  try {
    await Deno.mkdir(`${dir}/bin`);
    await Deno.writeTextFile(`${dir}/bin/tool`, "#!/bin/sh\n", { mode: 0o755 });
    await Deno.writeTextFile(`${dir}/bin/plain`, "x", { mode: 0o644 });
    const env = { PATH: `/nonexistent:${dir}/bin` };
    assert.equal(resolveProgram("tool", env, "/"), `${dir}/bin/tool`);
    assert.equal(resolveProgram("./bin/tool", env, dir), `${dir}/./bin/tool`);
    const code = (f: () => unknown) => {
      try {
        f();
      } catch (err) {
        assert.ok(err instanceof ExecError);
        return [err.code, err.message];
      }
      return undefined;
    };
    assert.deepEqual(code(() => resolveProgram("nope", env, "/")), [
      127,
      'exec: "nope": executable file not found in $PATH',
    ]);
    assert.deepEqual(code(() => resolveProgram("plain", env, "/")), [
      126,
      'exec: "plain": permission denied',
    ]);
    assert.deepEqual(code(() => resolveProgram(`${dir}/bin`, env, "/"))?.[0], 126);
    assert.deepEqual(code(() => resolveProgram(`${dir}/none`, env, "/"))?.[0], 127);
    assert.deepEqual(envRecord(["A=1", "B==2", "junk", "=x"]), { A: "1", B: "=2" });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
