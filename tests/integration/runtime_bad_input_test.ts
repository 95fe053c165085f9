/**
 * Bad input to the runtime verbs: an unknown id, a duplicate id, a bundle without config.json, a
 * config.json that is not a valid spec, a signal name that does not exist, an id with a path in
 * it. Each fails with status 1 (runc's) and a message naming the thing, and leaves nothing: no
 * sandbox dir, no supervisor. (`create` plans the VM but does not boot it: no VM runs here.)
 */
import assert from "node:assert/strict";
import { makeBusyboxRootfs } from "../helpers/rootfs.ts";
import { processesMatching } from "../helpers/nerdbox_cli.ts";
import { nb, ociState, pidAlive, until } from "../helpers/runtime_cli.ts";

async function setup() {
  const root = await Deno.makeTempDir({ prefix: "nbxrt-root-" });
  const bundle = await Deno.makeTempDir({ prefix: "nbxrt-bundle-" });
  await makeBusyboxRootfs(`${bundle}/rootfs`);
  const spec = await nb(["spec", "--bundle", bundle, "--", "sleep", "100"]);
  assert.equal(spec.code, 0, spec.stderr);
  return {
    root,
    bundle,
    g: ["--root", root],
    entries: async () => (await Array.fromAsync(Deno.readDir(root))).map((e) => e.name).sort(),
    close: async () => {
      for (const d of [root, bundle]) await Deno.remove(d, { recursive: true });
    },
  };
}

Deno.test("unknown id: every verb fails with status 1 naming the id; --force delete tolerates it", async () => {
  const t = await setup();
  try {
    for (const verb of [["state"], ["start"], ["kill"], ["delete"], ["logs"], ["exec"]]) {
      const args = [...t.g, ...verb, "nope-4711", ...(verb[0] === "exec" ? ["--", "true"] : [])];
      const r = await nb(args);
      assert.equal(r.code, 1, `${verb}: ${r.stderr}`);
      assert.match(r.stderr, /container "nope-4711" does not exist/, verb[0]);
    }
    assert.equal((await nb([...t.g, "delete", "--force", "nope-4711"])).code, 0);
    const bad = await nb([...t.g, "state", "../etc"]);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /invalid container id "\.\.\/etc"/);
    assert.deepEqual(await t.entries(), []);
  } finally {
    await t.close();
  }
});

Deno.test("a bundle without config.json, and one with an invalid spec: status 1, nothing made", async () => {
  const t = await setup();
  const empty = await Deno.makeTempDir({ prefix: "nbxrt-empty-" });
  try {
    const r = await nb([...t.g, "create", "--bundle", empty, "c-noconf"]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, new RegExp(`bundle "${empty}" has no config.json`));
    await Deno.writeTextFile(`${empty}/config.json`, JSON.stringify({ root: { path: "rootfs" } }));
    const r2 = await nb([...t.g, "create", "--bundle", empty, "c-badspec"]);
    assert.equal(r2.code, 1);
    assert.match(r2.stderr, /process/);
    assert.deepEqual(await t.entries(), []);
    assert.deepEqual(await processesMatching("_supervise"), []);
  } finally {
    await Deno.remove(empty, { recursive: true });
    await t.close();
  }
});

Deno.test("duplicate id and an unknown signal: refused, the existing sandbox untouched; delete of a created one cleans up", async () => {
  const t = await setup();
  try {
    const pidFile = `${t.root}/pid`;
    const c = await nb([...t.g, "create", "--bundle", t.bundle, "--pid-file", pidFile, "dup1"]);
    assert.equal(c.code, 0, c.stderr);
    const st = await ociState(t.g, "dup1");
    assert.equal(st.status, "created");
    assert.equal(Number(await Deno.readTextFile(pidFile)), st.pid, "--pid-file holds state's pid");
    assert.ok(pidAlive(st.pid));
    const again = await nb([...t.g, "create", "--bundle", t.bundle, "dup1"]);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /container "dup1" already exists/);
    const sig = await nb([...t.g, "kill", "dup1", "FOO"]);
    assert.equal(sig.code, 1);
    assert.match(sig.stderr, /unknown signal "FOO"/);
    const after = await ociState(t.g, "dup1");
    assert.deepEqual([after.status, after.pid], ["created", st.pid]);
    const del = await nb([...t.g, "delete", "dup1"]);
    assert.equal(del.code, 0, del.stderr);
    assert.ok(await until(() => !pidAlive(st.pid), 10_000), "the supervisor ended");
    assert.deepEqual(await t.entries(), ["pid"]);
  } finally {
    await nb([...t.g, "delete", "--force", "dup1"]);
    await t.close();
  }
});
