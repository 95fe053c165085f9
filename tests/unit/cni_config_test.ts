import assert from "node:assert/strict";
import {
  CniConfigError,
  loadCniConfigs,
  parseCniConfig,
  pickCniNetwork,
} from "../../lib/net/cni_config.ts";
import { tempDirWith, tutorialBridge, tutorialLoopback } from "../helpers/cni_fixtures.ts";

Deno.test("cni config: a single .conf becomes a list of one, bytes are the list", () => {
  const l = parseCniConfig(
    JSON.stringify(tutorialBridge("mynet", "cni0", "10.22.0.0/16")),
    "/d/10-bridge.conf",
  );
  assert.equal(l.name, "mynet");
  assert.equal(l.cniVersion, "1.0.0");
  assert.deepEqual(l.plugins.map((p) => [p.type, p.ipamType]), [["bridge", "host-local"]]);
  const bytes = JSON.parse(new TextDecoder().decode(l.bytes));
  assert.equal(bytes.plugins[0].bridge, "cni0");
  assert.equal(bytes.name, "mynet");
});

Deno.test("cni config: conflist capabilities and disableCheck are read", () => {
  const l = parseCniConfig(
    JSON.stringify({
      cniVersion: "0.4.0",
      name: "n1",
      disableCheck: true,
      plugins: [{ type: "bridge" }, { type: "portmap", capabilities: { portMappings: true } }],
    }),
    "x.conflist",
  );
  assert.equal(l.disableCheck, true);
  assert.deepEqual(l.plugins[1].capabilities, { portMappings: true });
});

Deno.test("cni config: cniVersions picks the highest supported", () => {
  const l = parseCniConfig(
    JSON.stringify({
      cniVersions: ["0.4.0", "1.0.0", "1.1.0"],
      name: "n",
      plugins: [{ type: "a" }],
    }),
    "x.conflist",
  );
  assert.equal(l.cniVersion, "1.0.0");
});

Deno.test("cni config: errors name the file, the field and the value", () => {
  const cases: [string, string, string, RegExp][] = [
    ["a.conflist", "{", "", /not valid JSON/],
    [
      "a.conflist",
      JSON.stringify({ cniVersion: "1.1.0", name: "n", plugins: [{ type: "x" }] }),
      "cniVersion",
      /"1\.1\.0" is not supported \(supported: 0\.1\.0.*1\.0\.0\)/,
    ],
    [
      "a.conflist",
      JSON.stringify({ cniVersion: "1.0.0", name: "bad name", plugins: [{ type: "x" }] }),
      "name",
      /"bad name"/,
    ],
    [
      "a.conflist",
      JSON.stringify({ cniVersion: "1.0.0", name: "n", plugins: [] }),
      "plugins",
      /non-empty array/,
    ],
    [
      "a.conflist",
      JSON.stringify({
        cniVersion: "1.0.0",
        name: "n",
        plugins: [{ type: "ok" }, { type: "../../bin/sh" }],
      }),
      "plugins[1].type",
      /"\.\.\/\.\.\/bin\/sh"/,
    ],
    [
      "a.conflist",
      JSON.stringify({
        cniVersion: "1.0.0",
        name: "n",
        plugins: [{ type: "b", ipam: { type: 7 } }],
      }),
      "plugins[0].ipam.type",
      /plugin binary name/,
    ],
    [
      "a.conflist",
      JSON.stringify({
        cniVersion: "1.0.0",
        name: "n",
        plugins: [{ type: "p", capabilities: { portMappings: "yes" } }],
      }),
      "plugins[0].capabilities.portMappings",
      /true or false/,
    ],
    ["a.conf", JSON.stringify({ cniVersion: "1.0.0", name: "n" }), "type", /got nothing/],
    [
      "a.conf",
      JSON.stringify({ cniVersion: 1, name: "n", type: "x" }),
      "cniVersion",
      /expected a string/,
    ],
    [
      "a.conf",
      JSON.stringify({ cniVersion: "1.0.0", name: "n", plugins: [] }),
      "plugins",
      /\.conflist/,
    ],
  ];
  for (const [file, text, field, re] of cases) {
    assert.throws(() => parseCniConfig(text, `/etc/x/${file}`), (e: unknown) => {
      assert.ok(e instanceof CniConfigError, String(e));
      assert.equal(e.file, `/etc/x/${file}`);
      assert.equal(e.field, field, e.message);
      assert.match(e.message, re);
      assert.ok(e.message.includes(`/etc/x/${file}`), e.message);
      return true;
    });
  }
});

Deno.test("cni config: the dir is read sorted; pick by name or first; clear misses", async () => {
  const dir = await tempDirWith({
    "99-loopback.conf": tutorialLoopback(),
    "10-bridge.conf": tutorialBridge("mynet", "cni0", "10.22.0.0/16"),
    "README.md": "not a config",
    "50-other.json": { cniVersion: "0.3.1", name: "other", type: "ptp" },
  });
  try {
    const lists = await loadCniConfigs(dir);
    assert.deepEqual(lists.map((l) => l.name), ["mynet", "other", "lo"]);
    assert.equal((await pickCniNetwork(dir)).name, "mynet");
    assert.equal((await pickCniNetwork(dir, "lo")).plugins[0].type, "loopback");
    await assert.rejects(
      pickCniNetwork(dir, "nope"),
      /no network named "nope" \(found: mynet, other, lo\)/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("cni config: empty and missing dirs are clear errors", async () => {
  const dir = await tempDirWith({});
  try {
    await assert.rejects(pickCniNetwork(dir), /no CNI network configuration found/);
    await assert.rejects(pickCniNetwork(`${dir}/nope`), /does not exist/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
