/**
 * Injection into CNI: CNI_ARGS is `K=V;K=V`, so a key or value holding `;` or `=` would smuggle
 * extra pairs to every plugin: it is refused before any plugin runs. Values with spaces, quotes,
 * commas and shell syntax arrive byte for byte (plugins are spawned with an argv, no shell), and
 * the netns path stays one CNI_NETNS value. Plugins here are test fakes that log their env (the
 * same runner against Debian's real plugins: tests/integration/cni_runner_test.ts).
 */
import { deepEqual, equal, match, rejects } from "node:assert/strict";
import { addNetworkList, delNetworkList } from "../../lib/net/cni.ts";
import { parseCniConfig } from "../../lib/net/cni_config.ts";
import { readFakeCalls, writeFakePlugin } from "../helpers/cni_fixtures.ts";

async function setup() {
  const bin = await Deno.makeTempDir({ prefix: "nbxcni-inj-bin-" });
  const cache = await Deno.makeTempDir({ prefix: "nbxcni-inj-cache-" });
  await writeFakePlugin(bin, "nbxfake-inj");
  const list = parseCniConfig(
    JSON.stringify({ cniVersion: "1.0.0", name: "injnet", plugins: [{ type: "nbxfake-inj" }] }),
    "inj.conflist",
  );
  return {
    bin,
    list,
    opts: { binDirs: [bin], cacheDir: cache },
    async cleanup() {
      await Deno.remove(bin, { recursive: true });
      await Deno.remove(cache, { recursive: true });
    },
  };
}

for (
  const [what, args] of [
    ["';' in a value", [["K8S_POD_NAME", "p1;IgnoreUnknown=0;EVIL=1"]]],
    ["'=' in a value", [["K8S_POD_NAME", "a=b"]]],
    ["';' in a key", [["A;B", "1"]]],
    ["'=' in a key", [["A=B", "1"]]],
    ["NUL in a value", [["A", "x\0y"]]],
    ["an empty key", [["", "1"]]],
  ] as [string, [string, string][]][]
) {
  Deno.test(`injection: CNI_ARGS with ${what} is refused before any plugin runs`, async () => {
    const s = await setup();
    try {
      await rejects(
        addNetworkList(s.list, {
          containerId: "nbx-inj-1",
          netns: "/run/netns/nbxcni-inj",
          ifName: "eth0",
          args,
        }, s.opts),
        (e: Error) => {
          match(e.message, /CNI_ARGS pair .*keys and values may not contain ';' or '='/);
          return true;
        },
      );
      deepEqual(await readFakeCalls(s.bin), [], "no plugin was called");
    } finally {
      await s.cleanup();
    }
  });
}

Deno.test("injection: CNI_ARGS values and the netns path with spaces, quotes, commas arrive intact", async () => {
  const s = await setup();
  const value = `a b "q" 'r' ,c $(id) \`id\` \\x`;
  const netns = '/run/netns/nbxcni inj,"x"';
  try {
    const rt = {
      containerId: "nbx-inj-2",
      netns,
      ifName: "eth0",
      args: [["K8S_POD_NAME", value], ["K8S_POD_NAMESPACE", "ns with space"]] as [
        string,
        string,
      ][],
    };
    await addNetworkList(s.list, rt, s.opts);
    await delNetworkList(s.list, rt, s.opts);
    const calls = await readFakeCalls(s.bin);
    equal(calls.length, 2);
    for (const c of calls) {
      equal(
        c.env.CNI_ARGS,
        `IgnoreUnknown=1;K8S_POD_NAME=${value};K8S_POD_NAMESPACE=ns with space`,
      );
      equal(c.env.CNI_NETNS, netns);
      equal(c.env.CNI_CONTAINERID, "nbx-inj-2");
    }
  } finally {
    await s.cleanup();
  }
});

Deno.test("injection: CNI container ids and interface names that could escape the cache dir are refused", async () => {
  const s = await setup();
  try {
    for (const containerId of ["../../etc", "a/b", "-x", ""]) {
      await rejects(
        addNetworkList(s.list, { containerId, netns: "/run/netns/x", ifName: "eth0" }, s.opts),
        /CNI containerId/,
      );
    }
    for (const ifName of ["..", "a/b", "eth 0", "x".repeat(16)]) {
      await rejects(
        addNetworkList(s.list, { containerId: "ok", netns: "/run/netns/x", ifName }, s.opts),
        /CNI ifName/,
      );
    }
    deepEqual(await readFakeCalls(s.bin), []);
  } finally {
    await s.cleanup();
  }
});
