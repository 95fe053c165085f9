import { deepEqual, equal } from "node:assert/strict";
import { buildSandboxSpec, type SandboxInput } from "../../lib/spec/sandbox.ts";
import { formatSpecError, SpecValidationError } from "../../lib/spec/types.ts";

const P = "io.containerd.nerdbox.";
const BASE: SandboxInput = {
  id: "abc123",
  rootfs: "/srv/rootfs",
  process: { args: ["/bin/sh"], env: [], cwd: "/", uid: 0, gid: 0, terminal: false },
};
const net = (sock: string, mac: string, extra = "") =>
  `socket=${sock},mode=unixstream,mac=${mac}${extra}`;

function errorsOf(input: SandboxInput): string[] {
  try {
    buildSandboxSpec(input);
  } catch (e) {
    if (!(e instanceof SpecValidationError)) throw e;
    return e.errors.map(formatSpecError);
  }
  return [];
}

Deno.test("defaults: 1 vCPU, 512 MiB, auto backend, TSI, hostname from the id", () => {
  const { spec, warnings } = buildSandboxSpec(BASE);
  deepEqual(warnings, []);
  deepEqual(spec, {
    id: "abc123",
    rootfs: "/srv/rootfs",
    process: BASE.process,
    hostname: "abc123",
    resources: { cpus: 1, memoryMiB: 512 },
    networks: [],
    ctrNetworks: [],
    ports: [],
    backend: "auto",
  });
  equal(buildSandboxSpec({ ...BASE, id: "0123456789abcdef" }).spec.hostname, "0123456789ab");
});

Deno.test("annotations fill the spec; flags override them", () => {
  const annotations = {
    [`${P}network.0`]: net("/run/a.sock", "02:00:00:00:00:01"),
    [`${P}network.1`]: net("/run/b.sock", "02:00:00:00:00:02"),
    [`${P}resources.cpu`]: "2",
    [`${P}resources.memory`]: "1G",
    [`${P}backend`]: "libkrun",
    [`${P}ctr.dns`]: "nameserver=10.0.0.1",
  };
  const a = buildSandboxSpec({ ...BASE, annotations }).spec;
  deepEqual(a.networks.map((n) => n.socket), ["/run/a.sock", "/run/b.sock"]);
  deepEqual(a.resources, { cpus: 2, memoryMiB: 1024 });
  equal(a.backend, "libkrun");
  deepEqual(a.dns, { nameservers: ["10.0.0.1"], search: [], options: [] });

  const { spec, warnings } = buildSandboxSpec({
    ...BASE,
    annotations,
    netFlags: [net("/run/c.sock", "02:00:00:00:00:03", ",addr=10.0.0.2/24")],
    cpus: "4",
    memory: "768",
    backend: "qemu",
    publish: ["8080:80", "127.0.0.1:5353:53/udp"],
    netns: "/var/run/netns/x",
    hostname: "web",
  });
  deepEqual(warnings, [`--net #0 replaces ${P}network.0`]);
  deepEqual(spec.networks.map((n) => [n.index, n.socket]), [[0, "/run/c.sock"], [
    1,
    "/run/b.sock",
  ]]);
  deepEqual(spec.resources, { cpus: 4, memoryMiB: 768 });
  equal(spec.backend, "qemu");
  equal(spec.hostname, "web");
  equal(spec.netns, "/var/run/netns/x");
  deepEqual(spec.ports, [
    { hostPort: 8080, guestPort: 80, protocol: "tcp" },
    { hostIp: "127.0.0.1", hostPort: 5353, guestPort: 53, protocol: "udp" },
  ]);
});

Deno.test("--net values use the annotation grammar, indexed by position", () => {
  const { spec } = buildSandboxSpec({
    ...BASE,
    netFlags: [
      net("/run/a.sock", "02:00:00:00:00:01"),
      "socket=/run/b.sock,mode=unixgram,mac=02:00:00:00:00:02,vfkit=true",
    ],
  });
  deepEqual(spec.networks.map((n) => [n.index, n.mode, n.vfkit]), [
    [0, "unixstream", false],
    [1, "unixgram", true],
  ]);
  deepEqual(errorsOf({ ...BASE, netFlags: ["socket=/a,mode=x,mac=02:00:00:00:00:01"] }), [
    '--net #0: mode="x": expected unixgram (a SOCK_DGRAM provider such as gvproxy ' +
    "-listen-vfkit) or unixstream (a SOCK_STREAM provider such as passt or libgvproxy)",
  ]);
});

Deno.test("collisions across flags and annotations are errors", () => {
  deepEqual(
    errorsOf({
      ...BASE,
      annotations: { [`${P}network.0`]: net("/run/a.sock", "02:00:00:00:00:01") },
      netFlags: [
        net("/run/x.sock", "02:00:00:00:00:09"),
        net("/run/a.sock", "02:00:00:00:00:09"),
      ],
    }),
    [
      '--net #1: mac="02:00:00:00:00:09": the same mac as --net #0: expected every network to ' +
      "have its own MAC",
    ],
  );
  deepEqual(
    errorsOf({
      ...BASE,
      annotations: { [`${P}network.1`]: net("/run/a.sock", "02:00:00:00:00:01") },
      netFlags: [net("/run/a.sock", "02:00:00:00:00:02")],
    }),
    [
      `${P}network.1: socket="/run/a.sock": the same socket as --net #0: expected every ` +
      "network to have its own provider socket",
    ],
  );
});

Deno.test("ctr networks are checked against the merged networks", () => {
  const annotations = {
    [`${P}network.0`]: net("/run/a.sock", "02:00:00:00:00:01"),
    [`${P}ctr.network.0`]: "vmmac=02:00:00:00:00:03",
  };
  deepEqual(
    errorsOf({ ...BASE, netFlags: [net("/run/c.sock", "02:00:00:00:00:03")], annotations }),
    [],
  );
  deepEqual(errorsOf({ ...BASE, annotations }), [
    `${P}ctr.network.0: vmmac="02:00:00:00:00:03": matches no VM network: expected the mac of ` +
    `an ${P}network.N (02:00:00:00:00:01)`,
  ]);
});

Deno.test("every error at once: id, rootfs, args, netns, hostname, flags, ports", () => {
  deepEqual(
    errorsOf({
      id: "../x",
      rootfs: "rel",
      process: { ...BASE.process, args: [] },
      netns: "netns",
      hostname: "-bad-",
      cpus: "0",
      memory: "lots",
      backend: "vbox",
      publish: ["8080:80", "8080:81", "0.0.0.0:8080:82/udp", "nope"],
      annotations: { [`${P}resources.cpu`]: "x" },
    }),
    [
      `${P}resources.cpu: "x": expected a whole number of vCPUs from 1 to 255`,
      "id: \"../x\": expected 1-128 letters, digits, '_', '.' or '-', starting with a " +
      "letter or digit",
      'rootfs: "rel": expected an absolute path',
      "process.args: expected at least one argument (the program to run)",
      '--netns: "netns": expected an absolute path',
      'hostname: "-bad-": expected a hostname of at most 64 bytes: dot-separated labels of ' +
      "letters, digits and '-'",
      '--cpus: "0": expected a whole number of vCPUs from 1 to 255',
      '--memory: "lots": expected MiB as a whole number (512) or with a suffix (512M, 1G), ' +
      "from 128 MiB to 1024 GiB",
      '--backend: "vbox": expected one of auto, libkrun, qemu',
      '--publish: "8080:81": host port 8080/tcp is already published: expected each host port once',
      '--publish: "nope": expected [IP:]HOST:GUEST[/tcp|/udp] with ports from 1 to 65535, e.g. ' +
      "8080:80, 127.0.0.1:8080:80/tcp or [::1]:5353:53/udp",
    ],
  );
});
