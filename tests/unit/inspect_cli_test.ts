import { deepEqual, equal, match, ok } from "node:assert/strict";
import { bindUnix, closeFd, SOCK_DGRAM } from "../../ffi/sockets.ts";

const ROOT = new URL("../..", import.meta.url).pathname;
const P = "io.containerd.nerdbox.";
const GV_EXAMPLE = "socket=/tmp/gvisor.sock,mode=unixgram,mac=fa:43:25:5d:6f:b4,addr=192.168.127.2";

/** Runs the real `bin/nerdbox inspect …`. */
async function inspect(...args: string[]): Promise<{ code: number; out: string; err: string }> {
  const r = await new Deno.Command(`${ROOT}bin/nerdbox`, {
    args: ["inspect", ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const d = new TextDecoder();
  return { code: r.code, out: d.decode(r.stdout), err: d.decode(r.stderr) };
}

// deno-lint-ignore no-explicit-any
async function inspectJson(...args: string[]): Promise<{ code: number; json: any }> {
  const r = await inspect("--json", ...args);
  return { code: r.code, json: JSON.parse(r.out) };
}

Deno.test("inspect --help exits 0 and documents the exit codes", async () => {
  const r = await inspect("--help");
  equal(r.code, 0);
  match(r.out, /^Usage: nerdbox inspect \[--json\] \[--probe\] ANNOTATION\.\.\./);
  match(
    r.out,
    /Exit status: 0 valid; 2 an annotation is invalid .*; 3 valid, but a probe\nfailed; 1 other failures/s,
  );
});

Deno.test("inspect explains the documented gvisor-tap-vsock example", async () => {
  const r = await inspect(`${P}network.0=${GV_EXAMPLE}`);
  equal(r.code, 0, r.err);
  const lines = r.out.split("\n");
  for (
    const want of [
      `${P}network.0 -> guest eth0 (default gateway)`,
      "  socket     /tmp/gvisor.sock",
      "  mode       unixgram (SOCK_DGRAM: one Ethernet frame per datagram)",
      "  mac        fa:43:25:5d:6f:b4",
      "  addressing 192.168.127.2/24 (static, prefix inferred from a bare address)",
      "  features   0 (none)",
      "  vfkit      false",
      '  libkrun    krun_add_net_unixgram(ctx, "/tmp/gvisor.sock", -1, {0xfa, 0x43, 0x25, 0x5d, ' +
      "0x6f, 0xb4}, 0, 0)",
      "Resources: 1 vCPU (default), 512 MiB (default)",
      "Backend: auto (default)",
      `  - ${P}network.0: addr=192.168.127.2 has no prefix length; assuming 192.168.127.2/24`,
      "VALID",
    ]
  ) ok(lines.includes(want), `missing line ${JSON.stringify(want)} in:\n${r.out}`);
});

Deno.test("inspect --json: networks, warnings, ctr networks, dns, resources, backend", async () => {
  const { code, json } = await inspectJson(
    "socket=/run/passt.sock,mode=unixstream,mac=02:00:00:00:00:02,features=" +
      "VIRTIO_NET_F_CSUM|VIRTIO_NET_F_HOST_TSO4,addr=10.0.0.2/24,addr=fd00::2/64",
    "socket=/run/gv.sock,mode=unixgram,mac=02:00:00:00:00:01,dhcp=1,vfkit=true",
    `${P}ctr.network.0=vmmac=02:00:00:00:00:01,ifname=eth%d,addr=10.1.0.2/24,gw=10.1.0.1`,
    `${P}ctr.dns=nameserver=10.1.0.1,search=example.com`,
    `${P}resources.cpu=2`,
    `${P}backend=qemu`,
  );
  equal(code, 0);
  equal(json.valid, true);
  equal(json.tsi, false);
  deepEqual(json.errors, []);
  deepEqual(json.warnings, []);
  equal(json.networks.length, 2);
  const [a, b] = json.networks;
  deepEqual(
    {
      index: a.index,
      socket: a.socket,
      mode: a.mode,
      mac: a.mac,
      dhcp: a.dhcp,
      addrs: a.addrs,
      features: a.features,
      featureNames: a.featureNames,
      vfkit: a.vfkit,
      vnetHdr: a.vnetHdr,
      defaultGateway: a.defaultGateway,
    },
    {
      index: 0,
      socket: "/run/passt.sock",
      mode: "unixstream",
      mac: "02:00:00:00:00:02",
      dhcp: false,
      addrs: ["10.0.0.2/24", "fd00::2/64"],
      features: 2049,
      featureNames: ["VIRTIO_NET_F_CSUM", "VIRTIO_NET_F_HOST_TSO4"],
      vfkit: false,
      vnetHdr: false,
      defaultGateway: true,
    },
  );
  equal(a.libkrun.function, "krun_add_net_unixstream");
  deepEqual([b.index, b.dhcp, b.vfkit, b.defaultGateway], [1, true, true, false]);
  deepEqual([b.libkrun.flags, b.libkrun.flagNames], [1, "NET_FLAG_VFKIT"]);
  deepEqual(json.ctrNetworks, [{
    index: 0,
    annotation: `${P}ctr.network.0`,
    vmmac: "02:00:00:00:00:01",
    vmNetwork: 1,
    addrs: ["10.1.0.2/24"],
    ifname: "eth%d",
    gateways: ["10.1.0.1"],
  }]);
  equal(json.dns.resolvConf, "nameserver 10.1.0.1\nsearch example.com\n");
  deepEqual(json.resources, {
    cpus: 2,
    memoryMiB: 512,
    source: { cpus: "annotation", memoryMiB: "default" },
  });
  equal(json.backend, "qemu");
});

Deno.test("inspect reports every error and exits 2", async () => {
  const { code, json } = await inspectJson(
    "socket=relative,mode=unixgram,mac=02:00:00:00:00:01",
    `${P}network.1=socket=/b,mode=unixstream,mac=01:00:00:00:00:00,vfkit=maybe`,
    `${P}resources.memory=1T`,
    `${P}netwrk.2=x`,
  );
  equal(code, 2);
  equal(json.valid, false);
  deepEqual(
    json.errors.map((e: { annotation: string; field: string }) => [e.annotation, e.field]),
    [
      [`${P}netwrk.2`, ""],
      [`${P}resources.memory`, ""],
      [`${P}network.0`, "socket"],
      [`${P}network.1`, "mac"],
      [`${P}network.1`, "vfkit"],
    ],
  );
  for (const e of json.errors) ok(e.message.includes("expected"), e.message);
  const text = await inspect("socket=relative,mode=unixgram,mac=02:00:00:00:00:01");
  equal(text.code, 2);
  ok(
    text.out.includes(
      `  - ${P}network.0: socket="relative": expected an absolute path to the provider's UNIX ` +
        "socket\n",
    ),
    text.out,
  );
  match(text.out, /\nINVALID: 1 error\n$/);
  equal(text.err, "nerdbox inspect: 1 invalid annotation error\n");
});

Deno.test("inspect: no network means TSI; bare values are network.<position>", async () => {
  const tsi = await inspect(`${P}resources.cpu=2`);
  equal(tsi.code, 0);
  ok(tsi.out.includes("Networks: none: the VM gets no NIC and uses TSI"), tsi.out);
  const { json } = await inspectJson(
    `${P}backend=auto`,
    "socket=/a,mode=unixgram,mac=02:00:00:00:00:01",
    "socket=/b,mode=unixgram,mac=02:00:00:00:00:02",
  );
  deepEqual(json.networks.map((n: { index: number; socket: string }) => [n.index, n.socket]), [
    [0, "/a"],
    [1, "/b"],
  ]);
  const dup = await inspectJson(
    "socket=/a,mode=unixgram,mac=02:00:00:00:00:01",
    `${P}network.0=socket=/b,mode=unixgram,mac=02:00:00:00:00:02`,
  );
  equal(dup.code, 2);
  equal(
    dup.json.errors[0].message,
    "given twice (a bare value is network.<its position among bare values>): expected each " +
      "annotation once",
  );
  const noValue = await inspectJson(`${P}network.0`);
  equal(noValue.code, 2);
  equal(
    noValue.json.errors[0].message,
    "no value: expected KEY=VALUE, e.g. io.containerd.nerdbox.network.0=socket=...",
  );
});

Deno.test("inspect --spec reads config.json (file or bundle dir); unreadable is exit 1", async () => {
  const dir = await Deno.makeTempDir({ prefix: "nbx-inspect-" });
  try {
    const config = {
      ociVersion: "1.1.0",
      annotations: {
        [`${P}network.0`]: GV_EXAMPLE,
        [`${P}resources.memory`]: "1G",
        "io.kubernetes.cri.container-type": "sandbox",
      },
    };
    await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(config));
    for (const path of [`${dir}/config.json`, dir]) {
      const { code, json } = await inspectJson("--spec", path);
      equal(code, 0);
      equal(json.source, `${dir}/config.json`);
      equal(json.networks[0].socket, "/tmp/gvisor.sock");
      equal(json.resources.memoryMiB, 1024);
    }
    await Deno.writeTextFile(
      `${dir}/bad.json`,
      JSON.stringify({ annotations: { [`${P}resources.cpu`]: 2 } }),
    );
    const bad = await inspectJson("--spec", `${dir}/bad.json`);
    equal(bad.code, 2);
    deepEqual(bad.json.errors, [{
      annotation: `${P}resources.cpu`,
      field: "",
      value: "2",
      message: "expected a string value in config.json annotations, got number",
    }]);
    await Deno.writeTextFile(`${dir}/broken.json`, "{");
    const broken = await inspect("--spec", `${dir}/broken.json`);
    equal(broken.code, 1);
    match(broken.err, /is not valid JSON/);
    const missing = await inspect("--spec", `${dir}/nope.json`);
    equal(missing.code, 1);
    match(missing.err, /^nerdbox inspect: --spec: /);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("inspect: bad usage exits 1", async () => {
  equal((await inspect()).code, 1);
  equal((await inspect("--frobnicate", "x")).code, 1);
  const both = await inspect("--spec", "/x", "socket=/a");
  equal(both.code, 1);
  equal(both.err, "nerdbox inspect: give either ANNOTATION arguments or --spec, not both\n");
});

Deno.test("inspect --probe against real sockets: ok 0, wrong type or missing 3", async () => {
  const dir = await Deno.makeTempDir({ prefix: "nbx-inspect-" });
  const stream = Deno.listen({ transport: "unix", path: `${dir}/stream.sock` });
  const dgram = bindUnix(`${dir}/dgram.sock`, SOCK_DGRAM);
  try {
    const ok0 = await inspectJson(
      "--probe",
      `socket=${dir}/stream.sock,mode=unixstream,mac=02:00:00:00:00:01`,
      `socket=${dir}/dgram.sock,mode=unixgram,mac=02:00:00:00:00:02`,
    );
    equal(ok0.code, 0);
    deepEqual(
      ok0.json.networks.map((n: { probe: { status: string; socketType: string } }) => [
        n.probe.status,
        n.probe.socketType,
      ]),
      [["ok", "stream"], ["ok", "dgram"]],
    );
    const wrong = await inspect(
      "--probe",
      `socket=${dir}/stream.sock,mode=unixgram,mac=02:00:00:00:00:01`,
      `socket=${dir}/dgram.sock,mode=unixstream,mac=02:00:00:00:00:02`,
      `socket=${dir}/none.sock,mode=unixstream,mac=02:00:00:00:00:03`,
    );
    equal(wrong.code, 3);
    const lines = wrong.out.split("\n");
    for (
      const want of [
        "  probe      FAILED (wrong-type): it is a stream socket: use mode=unixstream",
        "  probe      FAILED (wrong-type): it is a datagram socket: use mode=unixgram",
        "  probe      FAILED (missing): no such file: is the provider running, and is the path " +
        "right?",
        "VALID, but a probe failed",
      ]
    ) ok(lines.includes(want), `missing ${JSON.stringify(want)} in\n${wrong.out}`);
    equal(wrong.err, "nerdbox inspect: a probe failed\n");
    // Invalid annotations win over probe failures: exit 2.
    const invalid = await inspect(
      "--probe",
      `socket=${dir}/none.sock,mode=unixstream,mac=02:00:00:00:00:01`,
      "socket=x,mode=unixstream,mac=02:00:00:00:00:02",
    );
    equal(invalid.code, 2);
  } finally {
    stream.close();
    closeFd(dgram);
    await Deno.remove(dir, { recursive: true });
  }
});
