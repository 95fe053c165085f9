/**
 * ctr.network / ctr.dns from annotation to guest: the placement checks (lib/spec/ctr_placement.ts),
 * the plan (lib/vm/plan_ctr_network.ts), the guest config both backends send (and the guest
 * accepts), the netlink requests for rename/MAC, resolv.conf with a domain, inspect's text.
 */
import assert from "node:assert/strict";
import { buildSandboxSpec, type SandboxInput } from "../../lib/spec/sandbox.ts";
import { type SandboxSpec, type SpecError, SpecValidationError } from "../../lib/spec/types.ts";
import { planVm } from "../../lib/vm/plan.ts";
import { planCtrNetworks, withCtrNetworks } from "../../lib/vm/plan_ctr_network.ts";
import { buildGuestConfig } from "../../lib/vm/guest_config.ts";
import type { Backend } from "../../lib/vm/types.ts";
import { parseConfig } from "../../guest/config.ts";
import { mergeDns, resolvConf } from "../../guest/resolv.ts";
import {
  decodeAttrs,
  decodeMsgs,
  IFLA,
  linkDownMsg,
  RTM,
  setLinkMsg,
} from "../../guest/netlink.ts";
import { parseMac } from "../../guest/ip.ts";
import { parseMac as specMac } from "../../lib/spec/mac.ts";
import { inspectAnnotations } from "../../lib/cli/inspect.ts";
import { renderText } from "../../lib/cli/inspect_report.ts";

const P = "io.containerd.nerdbox.";
const MAC0 = specMac("02:00:00:00:00:01"), MAC1 = specMac("02:00:00:00:00:02");
const NET0 = `socket=/run/nb-ctr/a.sock,mode=unixstream,mac=${MAC0},addr=192.168.127.2/24`;
const NET1 = `socket=/run/nb-ctr/b.sock,mode=unixgram,mac=${MAC1},dhcp=true`;
const BASE: SandboxInput = {
  id: "ctr-test",
  rootfs: "/srv/rootfs",
  process: { args: ["/bin/true"], env: [], cwd: "/", uid: 0, gid: 0, terminal: false },
};

function spec(annotations: Record<string, string>, netFlags: string[] = [NET0, NET1]) {
  return buildSandboxSpec({ ...BASE, netFlags, annotations }).spec;
}

function specErrors(annotations: Record<string, string>, netFlags = [NET0, NET1]): string[] {
  try {
    spec(annotations, netFlags);
  } catch (e) {
    assert.ok(e instanceof SpecValidationError, `expected SpecValidationError, got ${e}`);
    return e.errors.map((x) => `${x.annotation}: ${x.field}="${x.value}": ${x.message}`);
  }
  return [];
}

function plan(s: SandboxSpec, backend: Backend = "qemu") {
  return planVm(s, { backend, stateDir: "/run/nerdbox/ctr-test" });
}

Deno.test("plan: a ctr network on the second NIC takes the default route from the first", () => {
  for (const backend of ["qemu", "libkrun"] as const) {
    const p = plan(
      spec({
        [`${P}ctr.network.5`]: `vmmac=${MAC1},ifname=ctr%d,mac=02:aa:00:00:00:05,` +
          "addr=10.99.0.3/24,addr=fd00:99::3/64,gw=fd00:99::1,gw=10.99.0.1",
      }),
      backend,
    );
    assert.deepEqual(p.ctrNetworks, [{
      annotation: `${P}ctr.network.5`,
      nic: 1,
      ifname: "ctr%d",
      mac: "02:aa:00:00:00:05",
      addrs: ["10.99.0.3/24", "fd00:99::3/64"],
      gateway4: "10.99.0.1",
      gateway6: "fd00:99::1",
    }]);
    const cfg = buildGuestConfig(p, { kind: "virtiofs", tag: "rootfs" });
    assert.deepEqual(cfg.networks, [
      { mac: MAC0, dhcp: false, addrs: ["192.168.127.2/24"], defaultRoute: false },
      {
        mac: MAC1,
        dhcp: true, // DHCP still runs: the ctr addresses are added to the lease's
        addrs: ["10.99.0.3/24", "fd00:99::3/64"],
        defaultRoute: true,
        gateway4: "10.99.0.1",
        gateway6: "fd00:99::1",
        ifname: "ctr%d",
        setMac: "02:aa:00:00:00:05",
      },
    ]);
    // What the host sends is what the guest accepts, field for field.
    assert.deepEqual(parseConfig(JSON.stringify(cfg)).networks.map((n) => n.sent), cfg.networks);
  }
});

Deno.test("plan: without gw the first network keeps the default route; mac=vmmac changes nothing", () => {
  const p = plan(
    spec({ [`${P}ctr.network.0`]: `vmmac=${MAC0},mac=${MAC0},addr=192.168.127.2/24` }),
  );
  assert.deepEqual(p.ctrNetworks, [{
    annotation: `${P}ctr.network.0`,
    nic: 0,
    addrs: ["192.168.127.2/24"],
  }]);
  const nets = buildGuestConfig(p, { kind: "virtiofs", tag: "rootfs" }).networks;
  assert.deepEqual(nets[0], {
    mac: MAC0,
    dhcp: false,
    addrs: ["192.168.127.2/24"], // the same address once
    defaultRoute: true,
    gateway4: "192.168.127.1",
  });
  assert.equal(nets[1].defaultRoute, false);
  assert.equal(plan(spec({})).ctrNetworks, undefined, "no ctr network, no field");
});

Deno.test("withCtrNetworks does not modify its input and refuses a NIC the VM lacks", () => {
  const nets = [{ mac: MAC0, dhcp: false, addrs: ["10.0.0.2/24"], defaultRoute: true }];
  const out = withCtrNetworks(nets, [{ annotation: "a", nic: 0, addrs: ["10.1.0.2/24"] }]);
  assert.deepEqual(out[0].addrs, ["10.0.0.2/24", "10.1.0.2/24"]);
  assert.deepEqual(nets[0].addrs, ["10.0.0.2/24"]);
  assert.throws(
    () => withCtrNetworks(nets, [{ annotation: `${P}ctr.network.1`, nic: 3, addrs: [] }]),
    /ctr\.network\.1: planned on NIC #3, which the VM lacks/,
  );
});

Deno.test("plan: under TSI (no NIC) a ctr network is an error naming the annotation", () => {
  // The annotation parser already refuses an unmatched vmmac; a spec built another way is
  // refused by the plan too, on both backends.
  const s: SandboxSpec = {
    ...spec({}, []),
    ctrNetworks: [{ index: 2, vmmac: MAC0, addrs: [], gateways: [] }],
  };
  for (const backend of ["qemu", "libkrun"] as const) {
    assert.throws(() => plan(s, backend), (e) => {
      assert.ok(e instanceof SpecValidationError);
      assert.equal(e.errors.length, 1);
      assert.equal(e.errors[0].annotation, `${P}ctr.network.2`);
      assert.equal(e.errors[0].field, "vmmac");
      assert.match(e.errors[0].message, /the VM has no NIC to put this container interface on/);
      return true;
    });
  }
  const errors: SpecError[] = [];
  planCtrNetworks(
    [{ index: 0, vmmac: MAC1, addrs: [], gateways: [] }],
    { kind: "nics", nics: [{ mac: MAC0 }] },
    errors,
  );
  assert.match(errors[0].message, /matches no attached NIC: expected one of 02:00:00:00:00:01/);
});

Deno.test("annotations: what the guest could not do is refused, naming the field", () => {
  const ctr = (n: number, v: string) => ({ [`${P}ctr.network.${n}`]: v });
  assert.deepEqual(
    specErrors({ ...ctr(0, `vmmac=${MAC0}`), ...ctr(1, `vmmac=${MAC0},ifname=c1`) }),
    [
      `${P}ctr.network.1: vmmac="${MAC0}": ${P}network.0 already carries ${P}ctr.network.0: ` +
      "expected one container interface per VM NIC (the guest hands the NIC itself to it)",
    ],
  );
  assert.deepEqual(specErrors(ctr(0, `vmmac=${MAC0},ifname=eth1`)), [
    `${P}ctr.network.0: ifname="eth1": the guest already has eth1 (${P}network.1's NIC): ` +
    "expected a name of its own, or a template such as ctr%d",
  ]);
  assert.deepEqual(specErrors(ctr(0, `vmmac=${MAC0},ifname=lo`)), [
    `${P}ctr.network.0: ifname="lo": the guest already has lo (the loopback interface): ` +
    "expected a name of its own, or a template such as ctr%d",
  ]);
  // Names may pass between NICs that are both renamed; a NIC may keep its own name.
  assert.deepEqual(
    specErrors({ ...ctr(0, `vmmac=${MAC0},ifname=eth1`), ...ctr(1, `vmmac=${MAC1},ifname=eth0`) }),
    [],
  );
  assert.deepEqual(specErrors(ctr(0, `vmmac=${MAC0},ifname=eth0`)), []);
  assert.deepEqual(specErrors(ctr(0, `vmmac=${MAC0},mac=${MAC1}`)), [
    `${P}ctr.network.0: mac="${MAC1}": the mac of ${P}network.1: expected a MAC of its own`,
  ]);
  assert.deepEqual(
    specErrors({
      ...ctr(0, `vmmac=${MAC0},addr=10.1.0.2/24,gw=10.1.0.1`),
      ...ctr(1, `vmmac=${MAC1},addr=10.2.0.2/24,gw=10.2.0.1,gw=fd00::1`),
    }),
    [
      `${P}ctr.network.1: gw="10.2.0.1": ${P}ctr.network.0 already gives the IPv4 default ` +
      "gateway: expected at most one gw per family across ctr networks",
    ],
  );
});

Deno.test("guest config: ctr fields and dns.domain are checked, naming the field", () => {
  const good = {
    version: 1,
    hostname: "h",
    rootfs: { kind: "virtiofs", tag: "rootfs" },
    process: { args: ["/bin/true"], env: [], cwd: "/", uid: 0, gid: 0, terminal: false },
    networks: [{ mac: MAC0, dhcp: false, addrs: [], defaultRoute: true }],
    dns: { nameservers: [], search: [], options: [], domain: "corp.example" },
    dhcpTimeoutMs: 1000,
  };
  assert.equal(parseConfig(JSON.stringify(good)).dns?.domain, "corp.example");
  const withNet = (extra: Record<string, unknown>) =>
    JSON.stringify({ ...good, networks: [{ ...good.networks[0], ...extra }] });
  assert.equal(parseConfig(withNet({ ifname: "ctr%d" })).networks[0].sent.ifname, "ctr%d");
  for (
    const [extra, re] of [
      [{ ifname: "a/b" }, /networks\[0\]\.ifname = "a\/b": expected an interface name/],
      [{ ifname: "sixteen-bytes-xx" }, /networks\[0\]\.ifname/],
      [{ ifname: "a%s" }, /networks\[0\]\.ifname/],
      [{ ifname: "%d%d" }, /networks\[0\]\.ifname/],
      [{ setMac: "02:00" }, /networks\[0\]\.setMac = "02:00": expected a MAC/],
      [{ gateway6: "10.0.0.1" }, /networks\[0\]\.gateway6 = "10\.0\.0\.1": expected an IPv6/],
    ] as const
  ) assert.throws(() => parseConfig(withNet(extra)), re);
});

Deno.test("netlink: link down, rename (NUL-terminated IFLA_IFNAME) and MAC (IFLA_ADDRESS)", () => {
  const down = decodeMsgs(linkDownMsg(4, 7))[0];
  assert.equal(down.type, RTM.NEWLINK);
  const dv = new DataView(down.body.buffer);
  assert.deepEqual([dv.getInt32(4, true), dv.getUint32(8, true), dv.getUint32(12, true)], [
    7,
    0,
    1,
  ]);
  const m =
    decodeMsgs(setLinkMsg(5, 7, { ifname: "ctr%d", mac: parseMac("02:aa:bb:cc:dd:01") }))[0];
  const v = new DataView(m.body.buffer);
  assert.deepEqual([v.getInt32(4, true), v.getUint32(8, true), v.getUint32(12, true)], [7, 0, 0]);
  const a = decodeAttrs(m.body, 16);
  assert.deepEqual(Array.from(a.get(IFLA.IFNAME)!), [...new TextEncoder().encode("ctr%d"), 0]);
  assert.deepEqual(Array.from(a.get(IFLA.ADDRESS)!), [0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0x01]);
  assert.equal(decodeAttrs(decodeMsgs(setLinkMsg(6, 7, { ifname: "x" }))[0].body, 16).size, 1);
});

Deno.test("resolv: ctr.dns's domain is written, and its domain/search win over DHCP's", () => {
  const dhcp = { nameservers: ["10.0.0.53"], domains: ["lan"] };
  const d = mergeDns({ nameservers: [], search: [], options: [], domain: "corp.example" }, dhcp);
  assert.deepEqual(d, {
    nameservers: ["10.0.0.53"],
    search: [],
    options: [],
    domain: "corp.example",
  });
  assert.equal(
    resolvConf({ ...d, search: ["a.example"] }),
    "# written by nerdbox guest init\ndomain corp.example\nsearch a.example\n" +
      "nameserver 10.0.0.53\n",
  );
  assert.throws(() => resolvConf({ ...d, domain: "a\nnameserver 6.6.6.6" }), /resolv\.conf domain/);
});

Deno.test("inspect says what the guest does with a ctr network", async () => {
  const rep = await inspectAnnotations({
    [`${P}network.0`]: NET0,
    [`${P}network.1`]: NET1,
    [`${P}ctr.network.0`]: `vmmac=${MAC1},addr=10.99.0.3/24,gw=10.99.0.1`,
  }, { source: "test", probe: false });
  const lines = renderText(rep).split("\n");
  for (
    const want of [
      `${P}ctr.network.0 -> container interface on ${P}network.1 (vmmac ${MAC1})`,
      "  guest      is eth1 itself, set up as below while down (docs/annotations.md)",
      "  ifname     (keeps eth1)",
      `  mac        (keeps ${MAC1})`,
      "  addr       10.99.0.3/24 (added to the NIC's own)",
      "  gw         10.99.0.1 (default route; replaces the first network's)",
    ]
  ) assert.ok(lines.includes(want), `missing ${JSON.stringify(want)} in:\n${lines.join("\n")}`);
});
