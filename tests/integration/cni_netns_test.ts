/**
 * lib/net/netns.ts against the real kernel: named netns create/delete, netns path validation
 * (nsfs magic, namespace type, symlinks, relative and non-normalised paths), and spawning inside a
 * netns with the FFI setns pattern without moving nerdbox itself.
 */
import assert from "node:assert/strict";
import {
  createNamedNetns,
  deleteNamedNetns,
  NetnsError,
  spawnInNetns,
  validateNetnsPath,
  withNetns,
} from "../../lib/net/netns.ts";

async function linkNames(args: string[] = []): Promise<string> {
  const o = await new Deno.Command("ip", { args: [...args, "-br", "link"], stdout: "piped" })
    .output();
  return new TextDecoder().decode(o.stdout);
}

Deno.test("netns: create, validate, spawn inside, delete (idempotent)", async () => {
  const name = "nbxcni-ns1";
  const path = await createNamedNetns(name);
  try {
    assert.equal(path, "/run/netns/nbxcni-ns1");
    assert.equal(validateNetnsPath(path), path);
    assert.equal(validateNetnsPath(`/var/run/netns/${name}`), `/var/run/netns/${name}`);
    assert.equal(validateNetnsPath(`/proc/${Deno.pid}/ns/net`), `/proc/${Deno.pid}/ns/net`);
    await assert.rejects(createNamedNetns(name), /ip netns add nbxcni-ns1: .*exists/i);

    const hostLinks = await linkNames();
    const child = spawnInNetns(path, "ip", { args: ["-br", "link"], stdout: "piped" });
    const inside = new TextDecoder().decode((await child.output()).stdout);
    assert.match(inside, /^lo\s+DOWN/);
    assert.doesNotMatch(inside, /eth0/);
    assert.equal(await linkNames(), hostLinks, "nerdbox itself stayed in the host netns");

    // withNetns refuses async work (its continuation would run in the wrong netns)
    assert.throws(() => withNetns(path, async () => {}), /must be synchronous/);
    assert.equal(await linkNames(), hostLinks);
    // an exception inside still switches back
    assert.throws(() =>
      withNetns(path, () => {
        throw new Error("boom");
      }), /boom/);
    assert.equal(await linkNames(), hostLinks);
  } finally {
    await deleteNamedNetns(name);
  }
  await deleteNamedNetns(name); // second time: no error
  await assert.rejects(Deno.stat(path), Deno.errors.NotFound);
});

Deno.test("netns: bad paths are clear errors", async () => {
  const dir = await Deno.makeTempDir({ prefix: "nbxcni-ns-" });
  const name = "nbxcni-ns2";
  const path = await createNamedNetns(name);
  try {
    await Deno.writeTextFile(`${dir}/file`, "x");
    await Deno.symlink(path, `${dir}/link`);
    const cases: [string, RegExp][] = [
      ["run/netns/x", /expected an absolute path/],
      ["/run/netns/../netns/" + name, /normalised/],
      ["/run/netns//" + name, /normalised/],
      ["/run/netns/nbxcni-does-not-exist", /does not exist/],
      [
        `${dir}/file`,
        /is not a namespace file \(filesystem magic 0x[0-9a-f]+, expected nsfs 0x6e736673/,
      ],
      [`${dir}/link`, /is a symlink/],
      [`/proc/${Deno.pid}/ns/mnt`, /symlink|another kind/],
      [`/proc/${Deno.pid}/ns/../ns/net`, /normalised/],
    ];
    for (const [p, re] of cases) {
      assert.throws(() => validateNetnsPath(p, "--netns"), (e: unknown) => {
        assert.ok(e instanceof NetnsError, String(e));
        assert.match(e.message, /^--netns "/);
        assert.match(e.message, re);
        return true;
      });
    }
    assert.throws(
      () => spawnInNetns(`${dir}/file`, "true", {}),
      /netns ".*\/file": is not a namespace file/,
    );
  } finally {
    await deleteNamedNetns(name);
    await Deno.remove(dir, { recursive: true });
  }
});
