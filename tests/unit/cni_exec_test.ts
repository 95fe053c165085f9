/**
 * The CNI runner's side of the protocol, observed through test-fake plugins (shell scripts that
 * log their env and stdin): env hygiene, CNI_ARGS, runtimeConfig, prevResult chaining, the cache,
 * reverse DEL with the cached result, rollback after a failed ADD, VERSION pre-check. The same
 * runner against Debian's real plugins: tests/integration/cni_runner_test.ts.
 */
import assert from "node:assert/strict";
import {
  addNetworkList,
  checkNetworkList,
  cniArgsText,
  delNetworkList,
  findPlugin,
  gcCachedAttachments,
  validateRuntimeConf,
} from "../../lib/net/cni.ts";
import { parseCniConfig } from "../../lib/net/cni_config.ts";
import { readFakeCalls, tempDirWith, writeFakePlugin } from "../helpers/cni_fixtures.ts";

const RESULT_A = {
  cniVersion: "1.0.0",
  interfaces: [{ name: "eth0", mac: "02:00:00:00:00:0a", sandbox: "/run/netns/x" }],
  ips: [{ interface: 0, address: "10.213.50.2/24", gateway: "10.213.50.1" }],
};
const RESULT_B = { ...RESULT_A, dns: { nameservers: ["10.213.50.1"] } };

async function setup(plugins: { name: string; fail?: string; result?: unknown }[], listExtra = {}) {
  const bin = await Deno.makeTempDir({ prefix: "nbxcni-bin-" });
  for (const p of plugins) await writeFakePlugin(bin, p.name, p);
  const cache = await Deno.makeTempDir({ prefix: "nbxcni-cache-" });
  const list = parseCniConfig(
    JSON.stringify({
      cniVersion: "1.0.0",
      name: "fakenet",
      plugins: plugins.map((p, i) => ({
        type: p.name,
        ...(i === 0 ? { capabilities: { portMappings: true }, custom: 42 } : {}),
      })),
      ...listExtra,
    }),
    "fake.conflist",
  );
  const opts = { binDirs: [`${bin}/missing-dir`, bin], cacheDir: cache };
  const rt = {
    containerId: "ctr-1",
    ifName: "eth0",
    netns: "/run/netns/nbxcni-fake",
    args: [["K8S_POD_NAME", "p1"]] as [string, string][],
    capabilityArgs: { portMappings: [{ hostPort: 8080, containerPort: 80, protocol: "tcp" }] },
  };
  const cleanup = async () => {
    await Deno.remove(bin, { recursive: true });
    await Deno.remove(cache, { recursive: true });
  };
  return { bin, cache, list, opts, rt, cleanup };
}

Deno.test("cni exec: ADD chains prevResult, passes runtimeConfig and a clean env, caches", async () => {
  const s = await setup([
    { name: "nbxfake-a", result: RESULT_A },
    { name: "nbxfake-b", result: RESULT_B },
  ]);
  try {
    const r = await addNetworkList(s.list, s.rt, s.opts);
    assert.deepEqual(r.raw, RESULT_B);
    const calls = await readFakeCalls(s.bin);
    assert.deepEqual(calls.map((c) => `${c.command} ${c.plugin}`), [
      "ADD nbxfake-a",
      "ADD nbxfake-b",
    ]);
    const [a, b] = calls;
    assert.deepEqual(a.env, {
      CNI_ARGS: "IgnoreUnknown=1;K8S_POD_NAME=p1",
      CNI_COMMAND: "ADD",
      CNI_CONTAINERID: "ctr-1",
      CNI_IFNAME: "eth0",
      CNI_NETNS: "/run/netns/nbxcni-fake",
      CNI_PATH: `${s.bin}/missing-dir:${s.bin}`,
      PATH: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    });
    assert.deepEqual(a.otherEnv, [], "no variable of nerdbox's own environment leaks in");
    assert.equal(a.stdin.name, "fakenet");
    assert.equal(a.stdin.cniVersion, "1.0.0");
    assert.equal(a.stdin.custom, 42);
    assert.deepEqual(a.stdin.runtimeConfig, { portMappings: s.rt.capabilityArgs.portMappings });
    assert.equal(a.stdin.prevResult, undefined);
    assert.deepEqual(b.stdin.prevResult, RESULT_A);
    assert.equal(b.stdin.runtimeConfig, undefined, "b declares no capability");

    const path = `${s.cache}/fakenet-ctr-1-eth0`;
    const st = await Deno.stat(path);
    assert.equal(st.mode! & 0o777, 0o600);
    const entry = JSON.parse(await Deno.readTextFile(path));
    assert.equal(entry.kind, "cniCacheV1");
    assert.equal(entry.networkName, "fakenet");
    assert.equal(entry.netns, "/run/netns/nbxcni-fake");
    assert.deepEqual(entry.cniArgs, [["IgnoreUnknown", "1"], ["K8S_POD_NAME", "p1"]]);
    assert.deepEqual(entry.capabilityArgs, s.rt.capabilityArgs);
    assert.deepEqual(entry.result, RESULT_B);
    const config = JSON.parse(
      new TextDecoder().decode(Uint8Array.from(atob(entry.config), (c) => c.charCodeAt(0))),
    );
    assert.deepEqual(config.plugins.map((p: { type: string }) => p.type), [
      "nbxfake-a",
      "nbxfake-b",
    ]);

    await assert.rejects(
      addNetworkList(s.list, s.rt, s.opts),
      /attachment fakenet\/ctr-1\/eth0 already exists \(cached at .*fakenet-ctr-1-eth0\); DEL it first/,
    );
    assert.equal((await readFakeCalls(s.bin)).length, 2, "a refused duplicate ADD runs no plugin");

    await checkNetworkList(s.list, s.rt, s.opts);
    const checks = (await readFakeCalls(s.bin)).slice(2);
    assert.deepEqual(checks.map((c) => `${c.command} ${c.plugin}`), [
      "CHECK nbxfake-a",
      "CHECK nbxfake-b",
    ]);
    assert.deepEqual(checks[0].stdin.prevResult, RESULT_B);

    // DEL: reverse order, cached result as prevResult, capabilities and args again (from the cache)
    await delNetworkList(s.list, {
      containerId: "ctr-1",
      ifName: "eth0",
      netns: "/run/netns/nbxcni-fake",
    }, s.opts);
    const dels = (await readFakeCalls(s.bin)).slice(4);
    assert.deepEqual(dels.map((c) => `${c.command} ${c.plugin}`), [
      "DEL nbxfake-b",
      "DEL nbxfake-a",
    ]);
    for (const d of dels) assert.deepEqual(d.stdin.prevResult, RESULT_B);
    assert.deepEqual(dels[1].stdin.runtimeConfig, {
      portMappings: s.rt.capabilityArgs.portMappings,
    });
    assert.equal(dels[1].env.CNI_ARGS, "IgnoreUnknown=1;K8S_POD_NAME=p1");
    await assert.rejects(Deno.stat(path), Deno.errors.NotFound);
  } finally {
    await s.cleanup();
  }
});

Deno.test("cni exec: a plugin failing mid-list → clear error, whole list DELed in reverse, no cache", async () => {
  const s = await setup([
    { name: "nbxfake-a", result: RESULT_A },
    { name: "nbxfake-fail", fail: "test fake refuses ADD" },
    { name: "nbxfake-c", result: RESULT_B },
  ]);
  try {
    await assert.rejects(
      addNetworkList(s.list, s.rt, s.opts),
      /ADD failed at network "fakenet" plugins\[1\] \(nbxfake-fail\): CNI plugin nbxfake-fail ADD failed: test fake refuses ADD \[code 999\]; the list was rolled back with DEL/,
    );
    const calls = await readFakeCalls(s.bin);
    assert.deepEqual(calls.map((c) => `${c.command} ${c.plugin}`), [
      "ADD nbxfake-a",
      "ADD nbxfake-fail",
      "DEL nbxfake-c",
      "DEL nbxfake-fail",
      "DEL nbxfake-a",
    ]);
    assert.deepEqual([...Deno.readDirSync(s.cache)], []);
  } finally {
    await s.cleanup();
  }
});

Deno.test("cni exec: VERSION pre-check and missing plugins fail before any ADD", async () => {
  const s = await setup([{ name: "nbxfake-a", result: RESULT_A }], { cniVersion: "0.2.0" });
  try {
    await assert.rejects(
      addNetworkList(s.list, s.rt, s.opts),
      /plugin nbxfake-a does not support cniVersion 0\.2\.0 \(supports 0\.3\.1,0\.4\.0,1\.0\.0\)/,
    );
    const missing = parseCniConfig(
      JSON.stringify({
        cniVersion: "1.0.0",
        name: "m",
        plugins: [{ type: "nbxfake-a" }, { type: "nbxfake-gone" }],
      }),
      "m.conflist",
    );
    await assert.rejects(
      addNetworkList(missing, s.rt, s.opts),
      /network "m" \(m\.conflist\): failed to find plugin "nbxfake-gone" in path \[.*missing-dir .*\]/,
    );
    assert.deepEqual(await readFakeCalls(s.bin), []);
  } finally {
    await s.cleanup();
  }
});

Deno.test("cni exec: GC DELs only the entries the predicate calls stale", async () => {
  const s = await setup([{ name: "nbxfake-a", result: RESULT_A }]);
  try {
    await addNetworkList(s.list, s.rt, s.opts);
    await addNetworkList(s.list, { ...s.rt, containerId: "ctr-2" }, s.opts);
    const errors = await gcCachedAttachments(s.opts, (e) => e.containerId === "ctr-2");
    assert.deepEqual(errors, []);
    assert.deepEqual([...Deno.readDirSync(s.cache)].map((e) => e.name), ["fakenet-ctr-1-eth0"]);
    const dels = (await readFakeCalls(s.bin)).filter((c) => c.command === "DEL");
    assert.deepEqual(dels.map((d) => d.env.CNI_CONTAINERID), ["ctr-2"]);
    assert.deepEqual(dels[0].stdin.prevResult, RESULT_A);
  } finally {
    await s.cleanup();
  }
});

Deno.test("cni exec: runtime identifiers and CNI_ARGS are validated", async () => {
  const ok = { containerId: "a", ifName: "eth0", netns: "/x" };
  for (
    const [rt, re] of [
      [{ ...ok, containerId: "-a" }, /containerId "-a"/],
      [{ ...ok, containerId: "a/b" }, /containerId/],
      [{ ...ok, ifName: "a-very-long-ifname" }, /ifName/],
      [{ ...ok, ifName: ".." }, /ifName/],
      [{ ...ok, ifName: "e th0" }, /ifName/],
      [{ ...ok, args: [["K", "a;b"]] }, /CNI_ARGS pair "K=a;b"/],
    ] as const
  ) {
    assert.throws(() => validateRuntimeConf(rt as never), re);
  }
  assert.equal(cniArgsText([]), "IgnoreUnknown=1");
  const dir = await tempDirWith({ "not-exec": "x" });
  try {
    await assert.rejects(findPlugin("not-exec", [dir]), /failed to find plugin "not-exec"/);
    assert.equal(await findPlugin("bridge", [dir, "/usr/lib/cni"]), "/usr/lib/cni/bridge");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
