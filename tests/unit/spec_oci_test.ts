import { deepEqual, equal, ok, rejects } from "node:assert/strict";
import {
  configAnnotations,
  MAX_CONFIG_BYTES,
  OciReadError,
  readOciBundle,
} from "../../lib/spec/oci.ts";
import { SpecValidationError } from "../../lib/spec/types.ts";

async function withBundle(
  config: unknown,
  fn: (dir: string) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "nbx-spec-oci-" });
  try {
    await Deno.writeTextFile(
      `${dir}/config.json`,
      typeof config === "string" ? config : JSON.stringify(config),
    );
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function specErrors(dir: string): Promise<[string, string][]> {
  try {
    await readOciBundle(dir);
  } catch (e) {
    if (!(e instanceof SpecValidationError)) throw e;
    for (const x of e.errors) equal(x.annotation, "config.json");
    return e.errors.map((x) => [x.field, x.message]);
  }
  throw new Error("expected a SpecValidationError");
}

const GOOD = {
  ociVersion: "1.1.0",
  root: { path: "rootfs", readonly: false },
  process: {
    args: ["/bin/sh", "-c", "echo hi"],
    env: ["PATH=/usr/bin:/bin", "TERM=xterm"],
    cwd: "/work",
    user: { uid: 1000, gid: 100, additionalGids: [10, 1234] },
    terminal: true,
  },
  hostname: "box",
  mounts: [{ destination: "/proc", type: "proc" }, {
    destination: "/etc/resolv.conf",
    source: "/x",
  }],
  annotations: {
    "io.containerd.nerdbox.network.0": "socket=/a,mode=unixgram,mac=02:00:00:00:00:01",
  },
  linux: { namespaces: [{ type: "pid" }, { type: "network", path: "/var/run/netns/cni-1" }] },
};

Deno.test("a complete config.json is read into an OciBundle", async () => {
  await withBundle(GOOD, async (dir) => {
    const b = await readOciBundle(dir);
    equal(b.dir, dir);
    equal(b.rootfs, `${dir}/rootfs`);
    deepEqual(b.process, {
      args: ["/bin/sh", "-c", "echo hi"],
      env: ["PATH=/usr/bin:/bin", "TERM=xterm"],
      cwd: "/work",
      uid: 1000,
      gid: 100,
      additionalGids: [10, 1234],
      terminal: true,
    });
    equal(b.hostname, "box");
    deepEqual(b.annotations, GOOD.annotations);
    equal(b.netnsPath, "/var/run/netns/cni-1");
    equal(b.dnsMount, true);
    deepEqual(b.raw, GOOD);
  });
});

Deno.test("defaults, absolute root.path and nerdctl's network-namespace annotation", async () => {
  await withBundle({
    root: { path: "/srv/root" },
    process: { args: ["true"] },
    annotations: { "nerdctl/network-namespace": "/var/run/netns/nerdctl-1" },
  }, async (dir) => {
    const b = await readOciBundle(dir);
    equal(b.rootfs, "/srv/root");
    deepEqual(b.process, { args: ["true"], env: [], cwd: "/", uid: 0, gid: 0, terminal: false });
    equal(b.hostname, "");
    equal(b.netnsPath, "/var/run/netns/nerdctl-1");
    equal(b.dnsMount, false);
  });
});

Deno.test("every bad field is reported with its JSON path", async () => {
  await withBundle({
    root: {},
    process: {
      args: ["/bin/sh", 7, "x\u0000y"],
      env: ["NOEQUALS", 3],
      cwd: "relative",
      user: { uid: -1, gid: 1.5, additionalGids: [1, "x"] },
      terminal: "yes",
    },
    hostname: 5,
    annotations: { a: 1 },
    linux: { namespaces: [{ type: "network", path: "netns" }, "x"] },
    mounts: [{}],
  }, async (dir) => {
    deepEqual(await specErrors(dir), [
      ["root.path", "expected a string (required)"],
      ["process.args[1]", "expected a string (required)"],
      ["process.args[2]", "expected a string without NUL bytes"],
      ["process.env[1]", "expected a string (required)"],
      ["process.env[0]", "expected KEY=VALUE"],
      ["process.cwd", "expected an absolute path"],
      ["process.terminal", "expected a boolean"],
      ["process.user.uid", "expected a whole number from 0 to 4294967295"],
      ["process.user.gid", "expected a whole number from 0 to 4294967295"],
      ["process.user.additionalGids[1]", "expected a whole number from 0 to 4294967295"],
      ["hostname", "expected a string"],
      ['annotations["a"]', "expected a string (required)"],
      ["linux.namespaces[0].path", "expected an absolute path"],
      ["linux.namespaces[1]", "expected an object with type"],
      ["mounts[0].destination", "expected a string (required)"],
    ]);
  });
});

Deno.test("process.user.additionalGids must be an array", async () => {
  await withBundle({
    root: { path: "rootfs" },
    process: { args: ["true"], user: { uid: 0, gid: 0, additionalGids: 5 } },
  }, async (dir) => {
    deepEqual(await specErrors(dir), [
      ["process.user.additionalGids", "expected an array of group ids"],
    ]);
  });
});

Deno.test("missing root and process, empty args, non-object JSON", async () => {
  await withBundle({}, async (dir) => {
    deepEqual(await specErrors(dir), [
      ["root", "expected an object with root.path (required)"],
      ["process", "expected an object with process.args (required)"],
    ]);
  });
  await withBundle({ root: { path: "" }, process: { args: [] } }, async (dir) => {
    deepEqual(await specErrors(dir), [
      ["root.path", "expected a non-empty path"],
      ["process.args", "expected at least one argument (the program)"],
    ]);
  });
  await withBundle("[1,2]", async (dir) => {
    deepEqual(await specErrors(dir), [["", "expected a JSON object (an OCI runtime spec)"]]);
  });
});

Deno.test("bad JSON and oversized files are refused; a missing file is a read error", async () => {
  await withBundle("{not json", async (dir) => {
    const errs = await specErrors(dir);
    equal(errs.length, 1);
    ok(errs[0][1].startsWith(`${dir}/config.json is not valid JSON (`), errs[0][1]);
    ok(errs[0][1].endsWith("): expected an OCI runtime spec"), errs[0][1]);
  });
  await withBundle(" ".repeat(MAX_CONFIG_BYTES + 1), async (dir) => {
    deepEqual(await specErrors(dir), [[
      "",
      `${dir}/config.json is ${MAX_CONFIG_BYTES + 1} bytes: expected at most 4194304 (4 MiB)`,
    ]]);
  });
  const dir = await Deno.makeTempDir({ prefix: "nbx-spec-oci-" });
  try {
    await rejects(readOciBundle(dir), (e) => {
      ok(e instanceof OciReadError);
      ok(e.message.startsWith(`cannot read ${dir}/config.json: `), e.message);
      return true;
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("configAnnotations: string values only", () => {
  deepEqual(configAnnotations({ annotations: { a: "1", b: 2, c: null } }), {
    annotations: { a: "1" },
    errors: [
      {
        annotation: "b",
        field: "",
        value: "2",
        message: "expected a string value in config.json annotations, got number",
      },
      {
        annotation: "c",
        field: "",
        value: "null",
        message: "expected a string value in config.json annotations, got null",
      },
    ],
  });
  deepEqual(configAnnotations({}), { annotations: {}, errors: [] });
});
