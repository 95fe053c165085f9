/**
 * Fuzz: the annotation parser, `--net`/`--publish` through buildSandboxSpec, the `nerdbox run`
 * flag parser and the OCI config reader. Invariant: each returns, or throws only its documented
 * error (SpecValidationError, RunUsageError, OciReadError); oversized input is refused early with
 * a bound. Seeded: a failure prints NERDBOX_FUZZ_SEED=… to replay it.
 */
import { deepEqual, equal, match, ok } from "node:assert/strict";
import {
  ANNOTATION_PREFIX,
  MAX_ANNOTATION_KEY_BYTES,
  MAX_ANNOTATION_VALUE_BYTES,
  MAX_NERDBOX_ANNOTATIONS,
  MAX_NETWORKS,
  parseAnnotations,
} from "../../lib/spec/annotations.ts";
import { buildSandboxSpec } from "../../lib/spec/sandbox.ts";
import { parseNetworkValue } from "../../lib/spec/network.ts";
import { parsePort } from "../../lib/spec/ports.ts";
import { OciReadError, parseOciConfig, readOciBundle } from "../../lib/spec/oci.ts";
import { formatSpecError, SpecValidationError } from "../../lib/spec/types.ts";
import { parseRunFlags, RunUsageError } from "../../lib/cli/run.ts";
import { fuzz, mutateBytes, mutateJson, mutateString, type Rng } from "./harness.ts";

const P = ANNOTATION_PREFIX;
const NET_VALUES = [
  "socket=/run/passt.sock,mode=unixstream,mac=02:00:00:00:00:01",
  "socket=/run/gv.sock,mode=unixgram,mac=02:00:00:00:00:02,dhcp=true,vfkit=true",
  'socket="/run/a,b.sock",mode=unixstream,mac=02:00:00:00:00:03,addr=10.0.0.2/24,addr=fd00::2/64',
  "socket=/r.sock,mode=unixstream,mac=02:00:00:00:00:04,features=csum|guest_csum|host_tso4",
  "socket=/r.sock,mode=unixgram,mac=02:00:00:00:00:05,vnet_hdr=true,features=0x4c83",
];
const CTR_VALUES = [
  "vmmac=02:00:00:00:00:01,ifname=eth%d,addr=10.1.0.2/24,gw=10.1.0.1",
  "vmmac=02:00:00:00:00:02,mac=02:00:00:00:01:02,ifname=ctr0",
];
const OTHER: Record<string, string[]> = {
  "resources.cpu": ["2", "0", "256", "1.5"],
  "resources.memory": ["512", "1G", "512M", "0"],
  "ctr.dns": ["nameserver=1.1.1.1,search=example.com,options=ndots:2", "domain=a.b"],
  "backend": ["qemu", "libkrun", "auto"],
};
const STRINGS = [...NET_VALUES, ...CTR_VALUES, ...Object.values(OTHER).flat()];

function annotationCorpus(): Record<string, string>[] {
  const out: Record<string, string>[] = [];
  NET_VALUES.forEach((v, i) => out.push({ [`${P}network.${i}`]: v }));
  out.push({
    [`${P}network.0`]: NET_VALUES[0],
    [`${P}network.1`]: NET_VALUES[1],
    [`${P}ctr.network.0`]: CTR_VALUES[0],
    [`${P}ctr.network.1`]: CTR_VALUES[1],
    [`${P}ctr.dns`]: OTHER["ctr.dns"][0],
    [`${P}resources.cpu`]: "2",
    [`${P}resources.memory`]: "1G",
    [`${P}backend`]: "qemu",
    "unrelated": "x",
  });
  return out;
}

function mutateAnnotations(rng: Rng, a: Record<string, string>): Record<string, string> {
  const out = { ...a };
  const keys = Object.keys(out);
  switch (rng.int(6)) {
    case 0: {
      const k = rng.pick(keys);
      out[k] = mutateString(rng, out[k], STRINGS);
      break;
    }
    case 1: {
      const k = rng.pick(keys);
      const v = out[k];
      delete out[k];
      out[mutateString(rng, k, [`${P}network.`, `${P}ctr.network.`, "9", "01"])] = v;
      break;
    }
    case 2:
      out[`${P}network.${rng.int(100)}`] = rng.pick(NET_VALUES);
      break;
    case 3: {
      // a huge value: must be refused by size, not parsed
      const k = rng.pick(keys);
      out[k] = `${out[k]},addr=${"1".repeat(MAX_ANNOTATION_VALUE_BYTES)}`;
      break;
    }
    case 4:
      // many networks at once
      for (let i = 0; i < 1 + rng.int(2 * MAX_NETWORKS); i++) {
        out[`${P}network.${i}`] = NET_VALUES[i % NET_VALUES.length];
      }
      break;
    default:
      out[`${P}${rng.pick(Object.keys(OTHER))}`] = mutateString(rng, rng.pick(STRINGS), STRINGS);
  }
  return out;
}

Deno.test("fuzz: parseAnnotations never throws, whatever the keys and values", async () => {
  const r = await fuzz({
    name: "parseAnnotations",
    corpus: annotationCorpus(),
    mutate: mutateAnnotations,
    run: (a) => {
      const parsed = parseAnnotations(a);
      // Every error is printable and names a key or flag.
      for (const e of parsed.errors) ok(formatSpecError(e).length > 0 && e.annotation !== "");
      // A parse with no errors has at most MAX_NETWORKS networks.
      if (parsed.errors.length === 0) ok(parsed.networks.length <= MAX_NETWORKS);
    },
    accepts: () => false, // documented: never throws on user input
    iterations: 3000,
  }, 0x5eed01);
  ok(r.iterations > 0);
});

Deno.test("fuzz: parseNetworkValue never throws (it is also the --net grammar)", async () => {
  await fuzz({
    name: "parseNetworkValue",
    corpus: NET_VALUES,
    mutate: (rng, s) => mutateString(rng, s, STRINGS),
    run: (v) => {
      const r = parseNetworkValue(v, "--net #0", 0);
      ok(r.network !== undefined || r.errors.length > 0);
    },
    accepts: () => false,
    iterations: 4000,
  }, 0x5eed02);
});

Deno.test("fuzz: buildSandboxSpec throws only SpecValidationError", async () => {
  await fuzz({
    name: "buildSandboxSpec",
    corpus: annotationCorpus().map((annotations, i) => ({
      annotations,
      netFlags: i % 2 ? [NET_VALUES[i % NET_VALUES.length]] : [],
      publish: ["8080:80", "127.0.0.1:53:53/udp"],
      cpus: "1",
    })),
    mutate: (rng, x) => ({
      annotations: mutateAnnotations(rng, x.annotations),
      netFlags: rng.chance(0.5)
        ? x.netFlags.map((f) => mutateString(rng, f, STRINGS))
        : [...x.netFlags, rng.pick(NET_VALUES)],
      publish: x.publish.map((p) => rng.chance(0.3) ? mutateString(rng, p) : p),
      cpus: rng.chance(0.2) ? mutateString(rng, x.cpus) : x.cpus,
    }),
    run: (x) =>
      buildSandboxSpec({
        id: "fuzz",
        rootfs: "/tmp/rootfs",
        process: { args: ["/bin/true"], env: [], cwd: "/", uid: 0, gid: 0, terminal: false },
        ...x,
      }),
    accepts: (e) => e instanceof SpecValidationError && e.errors.length > 0,
    iterations: 2000,
  }, 0x5eed03);
});

Deno.test("fuzz: parsePort throws only SpecValidationError", async () => {
  await fuzz({
    name: "parsePort",
    corpus: ["8080:80", "127.0.0.1:8080:80/tcp", "[::1]:5353:53/udp", "1:65535"],
    mutate: (rng, s) => mutateString(rng, s, [":", "[", "]", "/udp", "65536"]),
    run: (s) => {
      const p = parsePort(s);
      ok(p.hostPort >= 1 && p.hostPort <= 65535 && p.guestPort >= 1 && p.guestPort <= 65535);
    },
    accepts: (e) => e instanceof SpecValidationError,
    iterations: 4000,
  }, 0x5eed04);
});

const RUN_ARGV = [
  ["--net", NET_VALUES[0], "-e", "A=1", "-p", "8080:80", "/rootfs", "--", "/bin/sh", "-c", "x"],
  ["--bundle", "/b", "--backend", "qemu", "--accel", "tcg", "--dry-run", "--json"],
  ["--log-level", "debug", "--cpus", "2", "--memory", "1G", "-i", "-w", "/tmp", "/r", "--", "a"],
  ["--name", "x", "--hostname", "h", "--netns", "/run/netns/a", "--libkrun", "/l.so", "/r"],
];
const FLAG_WORDS = ["--net", "-e", "-p", "--", "-", "--bundle", "--accel", "--log-level", "-ie"];

Deno.test("fuzz: parseRunFlags throws only RunUsageError", async () => {
  await fuzz({
    name: "parseRunFlags",
    corpus: RUN_ARGV,
    mutate: (rng, argv) => {
      const a = [...argv];
      const i = rng.int(a.length + 1);
      switch (rng.int(4)) {
        case 0:
          a.splice(i, 0, rng.pick(FLAG_WORDS));
          break;
        case 1:
          a.splice(i, 1);
          break;
        case 2:
          if (a.length) a[i % a.length] = mutateString(rng, a[i % a.length], FLAG_WORDS);
          break;
        default:
          a.splice(i, 0, `--${mutateString(rng, "net", FLAG_WORDS)}=${rng.pick(STRINGS)}`);
      }
      return a;
    },
    run: (argv) => {
      const f = parseRunFlags(argv);
      // What follows `--` arrives untouched.
      const dd = argv.indexOf("--");
      if (dd >= 0) deepEqual(f.command, argv.slice(dd + 1));
    },
    accepts: (e) => e instanceof RunUsageError,
    iterations: 4000,
  }, 0x5eed05);
});

const OCI_CONFIG = {
  ociVersion: "1.1.0",
  root: { path: "rootfs", readonly: true },
  process: {
    args: ["/bin/sh", "-c", "echo hi"],
    env: ["PATH=/bin", "A=b=c"],
    cwd: "/",
    terminal: false,
    user: { uid: 0, gid: 0 },
  },
  hostname: "box",
  annotations: { [`${P}network.0`]: NET_VALUES[0], "nerdctl/network-namespace": "/run/netns/x" },
  linux: { namespaces: [{ type: "network", path: "/run/netns/x" }, { type: "pid" }] },
  mounts: [{ destination: "/etc/resolv.conf", source: "/x", type: "bind" }],
};

Deno.test("fuzz: parseOciConfig throws only SpecValidationError", async () => {
  await fuzz<unknown>({
    name: "parseOciConfig",
    corpus: [OCI_CONFIG, { ...OCI_CONFIG, linux: {} }],
    mutate: (rng, v) => mutateJson(rng, v),
    run: (raw) => {
      const b = parseOciConfig(raw, "/bundle");
      ok(b.rootfs.startsWith("/") && b.process.args.length > 0);
      if (b.netnsPath !== undefined) ok(b.netnsPath.startsWith("/"));
      // Annotations that passed the reader go through the annotation parser without throwing.
      parseAnnotations(b.annotations);
    },
    accepts: (e) => e instanceof SpecValidationError && e.errors.length > 0,
    iterations: 4000,
  }, 0x5eed06);
});

Deno.test("fuzz: readOciBundle on mutated config.json bytes: typed errors only", async () => {
  const dir = await Deno.makeTempDir({ prefix: "nbx-fuzz-oci-" });
  try {
    const seed = new TextEncoder().encode(JSON.stringify(OCI_CONFIG));
    await fuzz({
      name: "readOciBundle",
      corpus: [seed],
      mutate: (rng, b) => mutateBytes(rng, b),
      run: async (bytes) => {
        await Deno.writeFile(`${dir}/config.json`, bytes);
        await readOciBundle(dir);
      },
      accepts: (e) => e instanceof SpecValidationError || e instanceof OciReadError,
      iterations: 600,
    }, 0x5eed07);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("bounds: more than 64 network.N annotations are refused with one error, unparsed", () => {
  const a: Record<string, string> = {};
  // 200 keys whose values would each be an error if parsed: none of them is parsed.
  for (let i = 0; i < 200; i++) a[`${P}network.${i}`] = "garbage";
  const r = parseAnnotations(a);
  deepEqual(r.errors.map(formatSpecError), [
    `${P}network.N: 200 network.N annotations: expected at most ${MAX_NETWORKS}`,
  ]);
  deepEqual(r.networks, []);
  const c: Record<string, string> = {};
  for (let i = 0; i < 65; i++) c[`${P}ctr.network.${i}`] = "vmmac=02:00:00:00:00:01";
  match(formatSpecError(parseAnnotations(c).errors[0]), /65 ctr\.network\.N annotations/);
});

Deno.test("bounds: thousands of nerdbox annotations are refused before any is parsed", () => {
  const a: Record<string, string> = {};
  for (let i = 0; i < 5000; i++) a[`${P}network.${i}`] = NET_VALUES[0];
  const r = parseAnnotations(a);
  equal(r.errors.length, 1);
  match(
    r.errors[0].message,
    new RegExp(`5000 nerdbox annotations: expected at most ${MAX_NERDBOX_ANNOTATIONS}`),
  );
});

Deno.test("bounds: exactly 64 networks are accepted", () => {
  const a: Record<string, string> = {};
  for (let i = 0; i < MAX_NETWORKS; i++) {
    const mac = `02:00:00:00:${(i >> 8).toString(16).padStart(2, "0")}:${
      (i & 0xff).toString(16).padStart(2, "0")
    }`;
    a[`${P}network.${i}`] = `socket=/run/n${i}.sock,mode=unixstream,mac=${mac}`;
  }
  const r = parseAnnotations(a);
  deepEqual(r.errors, []);
  equal(r.networks.length, MAX_NETWORKS);
});

Deno.test("bounds: a value over 64 KiB is refused by size, with a short echo of it", () => {
  const huge = `${NET_VALUES[0]},addr=${"9".repeat(MAX_ANNOTATION_VALUE_BYTES)}`;
  const r = parseAnnotations({ [`${P}network.0`]: huge });
  equal(r.errors.length, 1);
  match(r.errors[0].message, /value of 65\d{3} bytes: expected at most 65536 \(64 KiB\)/);
  ok(r.errors[0].value.length < 200, "the error does not echo 64 KiB back");
  // multi-byte: 30000 × "é" = 60000 bytes is fine, 40000 × "é" = 80000 bytes is not
  equal(parseAnnotations({ [`${P}ctr.dns`]: `search=${"é".repeat(40000)}` }).errors.length, 1);
  match(
    parseAnnotations({ [`${P}ctr.dns`]: `search=${"é".repeat(40000)}` }).errors[0].message,
    /80007 bytes/,
  );
  const longKey = `${P}network.${"1".repeat(MAX_ANNOTATION_KEY_BYTES)}`;
  match(parseAnnotations({ [longKey]: "x" }).errors[0].message, /annotation key of \d+ bytes/);
});

Deno.test("bounds: --net flags: more than 64, or a value over 64 KiB, are refused", () => {
  const base = {
    id: "b",
    rootfs: "/r",
    process: { args: ["/bin/true"], env: [], cwd: "/", uid: 0, gid: 0, terminal: false },
  };
  try {
    buildSandboxSpec({ ...base, netFlags: Array(65).fill(NET_VALUES[0]) });
    throw new Error("accepted 65 --net flags");
  } catch (e) {
    ok(e instanceof SpecValidationError);
    deepEqual(e.errors.map(formatSpecError), [`--net: expected at most 64 --net flags`]);
  }
  try {
    buildSandboxSpec({ ...base, netFlags: [`${NET_VALUES[0]},${"x".repeat(70000)}`] });
    throw new Error("accepted a 70 KB --net");
  } catch (e) {
    ok(e instanceof SpecValidationError);
    match(e.message, /--net #0: value of 700\d\d bytes: expected at most 65536/);
  }
});

Deno.test("bounds: process args/env: NUL, more than 4096 entries, more than 512 KiB are refused", () => {
  const spec = (args: string[], env: string[] = []) => () =>
    buildSandboxSpec({
      id: "b",
      rootfs: "/r",
      process: { args, env, cwd: "/", uid: 0, gid: 0, terminal: false },
    });
  const refused = (fn: () => unknown, re: RegExp) => {
    try {
      fn();
      throw new Error("accepted");
    } catch (e) {
      ok(e instanceof SpecValidationError, String(e));
      match(e.message, re);
    }
  };
  refused(spec(["/bin/echo", "a\0b"]), /process\.args\[1\]: .*expected no NUL bytes/);
  refused(spec(["/bin/true"], ["A=\0"]), /process\.env\[0\]/);
  refused(spec(["/bin/true", ...Array(4100).fill("x")]), /process\.args: .*at most 4096 entries/);
  refused(spec(["/bin/true", "y".repeat(600_000)]), /expected at most 524288/);
  equal(spec(["/bin/true", "y".repeat(400_000)])().spec.process.args.length, 2);
});
