/** lib/vm/plan.ts: TSI vs NICs, NIC order and gateway, port rules per backend, kvm detection. */
import assert from "node:assert/strict";
import { buildSandboxSpec } from "../../lib/spec/sandbox.ts";
import { SpecValidationError } from "../../lib/spec/types.ts";
import { firstHostAddress, kvmStatus, planVm, resolveBackend } from "../../lib/vm/plan.ts";
import type { Backend } from "../../lib/vm/types.ts";

const NET0 =
  "socket=/run/nb-plan/a.sock,mode=unixstream,mac=5A:94:EF:E4:0C:EE,addr=192.168.127.2/24";
const NET1 = "socket=/run/nb-plan/b.sock,mode=unixgram,mac=02:00:00:00:00:02,dhcp=true,vfkit=true";

function spec(
  extra: { netFlags?: string[]; publish?: string[]; annotations?: Record<string, string> } = {},
) {
  return buildSandboxSpec({
    id: "plan-test",
    rootfs: "/srv/rootfs",
    process: { args: ["/bin/true"], env: ["A=1"], cwd: "/", uid: 0, gid: 0, terminal: false },
    ...extra,
  }).spec;
}

function plan(backend: Backend, extra: Parameters<typeof spec>[0] = {}) {
  return planVm(spec(extra), { backend, stateDir: "/run/nerdbox/plan-test" });
}

function planErrors(backend: Backend, extra: Parameters<typeof spec>[0]): string[] {
  try {
    plan(backend, extra);
  } catch (e) {
    assert.ok(e instanceof SpecValidationError, `expected SpecValidationError, got ${e}`);
    return e.errors.map((x) => `${x.annotation}|${x.message}`);
  }
  assert.fail("expected the plan to be refused");
}

Deno.test("no network: TSI with the published ports", () => {
  const p = plan("libkrun", { publish: ["8080:80", "9000:9000/tcp"] });
  assert.equal(p.network.kind, "tsi");
  assert.deepEqual(
    p.network.kind === "tsi" ? p.network.ports.map((x) => [x.hostPort, x.guestPort]) : [],
    [
      [8080, 80],
      [9000, 9000],
    ],
  );
  assert.equal(p.backend, "libkrun");
  assert.equal(p.stateDir, "/run/nerdbox/plan-test");
  assert.equal(p.cpus, 1);
  assert.equal(p.memoryMiB, 512);
});

Deno.test("networks: NICs in order, eth0 first with the default route and gateway4", () => {
  const p = plan("libkrun", { netFlags: [NET0, NET1] });
  assert.equal(p.network.kind, "nics");
  if (p.network.kind !== "nics") return;
  const [a, b] = p.network.nics;
  assert.equal(a.name, "eth0");
  assert.equal(a.mac, "5a:94:ef:e4:0c:ee");
  assert.equal(a.mode, "unixstream");
  assert.deepEqual(a.addrs, ["192.168.127.2/24"]);
  assert.equal(a.defaultRoute, true);
  assert.equal(a.gateway4, "192.168.127.1");
  assert.equal(b.name, "eth1");
  assert.equal(b.defaultRoute, false);
  assert.equal(b.gateway4, undefined);
  assert.equal(b.vfkit, true);
  assert.equal(b.dhcp, true);
});

Deno.test("annotation order is numeric: network.10 after network.2", () => {
  const p = plan("libkrun", {
    annotations: {
      "io.containerd.nerdbox.network.10": NET1,
      "io.containerd.nerdbox.network.2": NET0,
    },
  });
  assert.ok(p.network.kind === "nics");
  assert.deepEqual(p.network.nics.map((n) => [n.name, n.mac]), [
    ["eth0", "5a:94:ef:e4:0c:ee"],
    ["eth1", "02:00:00:00:00:02"],
  ]);
});

Deno.test("a DHCP first network has no static gateway", () => {
  const p = plan("qemu", { netFlags: [NET1, NET0] });
  assert.ok(p.network.kind === "nics");
  assert.equal(p.network.nics[0].gateway4, undefined);
  assert.equal(p.network.nics[1].gateway4, undefined, "only the first NIC carries the route");
});

Deno.test("ports with networks attached are refused under both backends", () => {
  for (const backend of ["libkrun", "qemu"] as const) {
    const errs = planErrors(backend, { netFlags: [NET0], publish: ["8080:80"] });
    assert.equal(errs.length, 1);
    assert.match(errs[0], /^--publish\|ports cannot be published while networks are attached/);
  }
});

Deno.test("TSI cannot express a host address or UDP: refused under libkrun naming --publish", () => {
  const errs = planErrors("libkrun", { publish: ["127.0.0.1:8080:80", "5353:53/udp"] });
  assert.equal(errs.length, 2);
  assert.match(
    errs[0],
    /^--publish\|"127\.0\.0\.1:8080:80\/tcp": libkrun's TSI port map has no host address/,
  );
  assert.match(errs[1], /^--publish\|"5353:53\/udp": libkrun's TSI port map forwards TCP only/);
  // QEMU (passt) can: same ports are accepted there, on a private passt with a generated MAC.
  const p = plan("qemu", { publish: ["127.0.0.1:8080:80", "5353:53/udp"] });
  assert.ok(p.network.kind === "passt");
  assert.equal(p.network.ports[0].hostIp, "127.0.0.1");
  assert.match(p.network.mac, /^52:54:00(:[0-9a-f]{2}){3}$/);
  assert.equal(p.network.socket, "/run/nerdbox/plan-test/passt/passt.sock");
});

Deno.test("the same guest port twice is refused under libkrun (its port map rejects it)", () => {
  const errs = planErrors("libkrun", { publish: ["8080:80", "8081:80"] });
  assert.equal(errs.length, 1);
  assert.match(errs[0], /guest port 80 is already published as 8080:80\/tcp/);
});

Deno.test("vnet_hdr is refused when the probed libkrun lacks the flag", () => {
  const s = spec({ netFlags: [`${NET0},vnet_hdr=true`] });
  assert.throws(
    () => planVm(s, { backend: "libkrun", stateDir: "/x", libkrunCaps: { vnetHdr: false } }),
    (e: unknown) =>
      e instanceof SpecValidationError && e.errors[0].field === "vnet_hdr" &&
      /does not support NET_FLAG_INCLUDE_VNET_HEADER/.test(e.errors[0].message),
  );
  const ok = planVm(s, { backend: "libkrun", stateDir: "/x", libkrunCaps: { vnetHdr: true } });
  assert.ok(ok.network.kind === "nics" && ok.network.nics[0].vnetHdr);
});

Deno.test("accel, libkrun options and netns are carried into the plan", () => {
  const s = buildSandboxSpec({
    id: "plan-test",
    rootfs: "/srv/rootfs",
    process: { args: ["/bin/true"], env: [], cwd: "/", uid: 0, gid: 0, terminal: false },
    netns: `/proc/${Deno.pid}/ns/net`,
  }).spec;
  const p = planVm(s, {
    backend: "qemu",
    stateDir: "/x",
    accel: "tcg",
    libkrun: { path: "/opt/libkrun.so.1", logLevel: 4 },
  });
  assert.equal(p.accel, "tcg");
  assert.equal(p.netns, `/proc/${Deno.pid}/ns/net`);
  // This process's own netns is the host's: never taken over, a private passt instead.
  assert.equal(p.network.kind, "passt");
  assert.deepEqual(p.libkrun, { path: "/opt/libkrun.so.1", logLevel: 4 });
  assert.deepEqual(JSON.parse(JSON.stringify(p)), p, "the plan is plain JSON");
});

Deno.test("the netns is checked once, by the plan, naming where it came from", () => {
  const s = buildSandboxSpec({
    id: "plan-test",
    rootfs: "/srv/rootfs",
    process: { args: ["/bin/true"], env: [], cwd: "/", uid: 0, gid: 0, terminal: false },
    netns: "/run/netns/nb-plan-no-such-netns",
  }).spec;
  assert.throws(
    () => planVm(s, { backend: "libkrun", stateDir: "/x", netnsSource: "--netns" }),
    /^NetnsError: --netns "\/run\/netns\/nb-plan-no-such-netns": /,
  );
});

Deno.test("QEMU refuses vnet_hdr in the plan; unixgram NICs get their local socket there", () => {
  const errs = planErrors("qemu", { netFlags: [`${NET0},vnet_hdr=true`] });
  assert.equal(errs.length, 1);
  assert.match(errs[0], /^io\.containerd\.nerdbox\.network\.0 \/ --net #0\|QEMU's stream\/dgram/);
  const p = plan("qemu", { netFlags: [NET0, NET1] });
  assert.ok(p.network.kind === "nics");
  assert.equal(p.network.nics[0].localSocket, undefined);
  assert.equal(p.network.nics[1].localSocket, "/run/nerdbox/plan-test/n1.sock");
  assert.equal(p.network.nics[0].mac, "5a:94:ef:e4:0c:ee");
});

Deno.test("firstHostAddress", () => {
  assert.equal(firstHostAddress({ family: 4, address: "10.1.2.77", prefix: 24 }), "10.1.2.1");
  assert.equal(firstHostAddress({ family: 4, address: "10.1.2.77", prefix: 16 }), "10.1.0.1");
  assert.equal(
    firstHostAddress({ family: 4, address: "172.16.5.130", prefix: 25 }),
    "172.16.5.129",
  );
  assert.equal(firstHostAddress({ family: 4, address: "10.0.0.7", prefix: 31 }), "10.0.0.6");
  assert.equal(firstHostAddress({ family: 4, address: "10.0.0.7", prefix: 32 }), undefined);
  assert.equal(firstHostAddress({ family: 6, address: "fd00::2", prefix: 64 }), undefined);
});

Deno.test("kvmStatus: a missing device, and kvm_pvm, are not usable", async () => {
  const dir = await Deno.makeTempDir({ prefix: "nb-plan-" });
  try {
    const missing = kvmStatus(`${dir}/kvm`, `${dir}/sys`);
    assert.equal(missing.usable, false);
    assert.match(missing.reason, /does not exist/);
    // A regular file stands in for the device node, to reach the module check.
    await Deno.writeTextFile(`${dir}/kvm`, "");
    await Deno.mkdir(`${dir}/sys/kvm_pvm`, { recursive: true });
    const pvm = kvmStatus(`${dir}/kvm`, `${dir}/sys`);
    assert.equal(pvm.usable, false);
    assert.match(pvm.reason, /kvm_pvm .*KVM_EXIT_INTERNAL_ERROR/);
    await Deno.remove(`${dir}/sys/kvm_pvm`);
    assert.equal(kvmStatus(`${dir}/kvm`, `${dir}/sys`).usable, true);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("resolveBackend: explicit choices stay; auto follows this host's /dev/kvm", async () => {
  assert.equal(await resolveBackend("libkrun"), "libkrun");
  assert.equal(await resolveBackend("qemu"), "qemu");
  const expected = kvmStatus().usable ? "libkrun" : "qemu";
  assert.equal(await resolveBackend("auto"), expected);
  // With a libkrun that cannot be found, auto is QEMU whatever the KVM.
  assert.equal(await resolveBackend("auto", { libkrunPath: "/nonexistent/libkrun.so.1" }), "qemu");
});
