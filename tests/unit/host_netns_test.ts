/**
 * The host's own network namespace is recognised by its nsfs inode (PID 1's when readable, and
 * nerdbox's own), and every step that would change interfaces in a namespace (tc redirect, CNI
 * ADD) refuses it before touching anything.
 */
import assert from "node:assert/strict";
import {
  HOST_NETNS_PATH,
  HostNetnsError,
  isHostNetns,
  netnsIdentity,
  OWN_NETNS_PATH,
  refuseHostNetns,
} from "../../lib/net/host_netns.ts";
import { validateNetnsPath } from "../../lib/net/netns.ts";
import { startTcRedirect, undoTcRedirect } from "../../lib/net/tc_redirect.ts";
import { addNetworkList } from "../../lib/net/cni.ts";
import { parseCniConfig } from "../../lib/net/cni_config.ts";
import { takeHostSnapshot } from "../helpers/host_snapshot.ts";

const NET_ASPECTS = ["links", "addrs", "routes", "qdiscs"] as const;
/** The host netns as this test process names it (CI runs tests in the host's namespace). */
const SELF = `/proc/${Deno.pid}/ns/net`;

Deno.test("host netns: nerdbox's own namespace and PID 1's are the host's, by any path", () => {
  assert.match(netnsIdentity(OWN_NETNS_PATH) ?? "", /^\d+:\d+$/);
  assert.equal(isHostNetns(SELF), true);
  assert.equal(isHostNetns("/proc/self/ns/net"), true);
  // PID 1's namespace counts whenever it is readable (some sandboxes deny even root).
  if (netnsIdentity(HOST_NETNS_PATH) !== undefined) {
    assert.equal(isHostNetns(HOST_NETNS_PATH), true);
  }
  assert.equal(isHostNetns("/nonexistent/netns"), false);
  // Another kind of namespace has another inode.
  assert.equal(isHostNetns("/proc/self/ns/mnt"), false);
  // Only the protected paths count: with another reference, ours is not "the host's".
  assert.equal(isHostNetns(SELF, ["/proc/self/ns/mnt"]), false);
});

Deno.test("host netns: no readable reference namespace is an error, not a guess", () => {
  assert.throws(() => isHostNetns(SELF, ["/nonexistent/ns"]), HostNetnsError);
});

Deno.test("host netns: refuseHostNetns names the change, the path and the alternative", () => {
  assert.throws(() => refuseHostNetns(SELF, "doing X"), (e: Error) => {
    assert.ok(e instanceof HostNetnsError);
    assert.equal(
      e.message.startsWith(`doing X: netns "${SELF}" is the host's own network namespace`),
      true,
      e.message,
    );
    assert.match(e.message, /never changes the host's interfaces, qdiscs or routes/);
    assert.match(e.message, /TSI under libkrun, passt under QEMU/);
    return true;
  });
  refuseHostNetns("/nonexistent/netns", "doing X"); // not the host's: no refusal
});

Deno.test("host netns: tc redirect refuses the host's namespace and changes nothing", async () => {
  const before = await takeHostSnapshot({ aspects: NET_ASPECTS });
  await assert.rejects(startTcRedirect(validateNetnsPath(SELF), "nbxtrefuse"), (e: Error) => {
    assert.ok(e instanceof HostNetnsError, String(e));
    assert.match(e.message, /tc redirect/);
    return true;
  });
  // The undo path (used by the dead-run sweep on recorded runs) leaves the host alone too.
  await undoTcRedirect(SELF, "nbxtrefuse", "lo", 0);
  assert.deepEqual(await takeHostSnapshot({ aspects: NET_ASPECTS }), before);
});

Deno.test("host netns: CNI ADD refuses the host's namespace before any plugin runs", async () => {
  const list = parseCniConfig(
    JSON.stringify({ cniVersion: "1.0.0", name: "hostnet", plugins: [{ type: "bridge" }] }),
    "hostnet.conflist",
  );
  const cache = await Deno.makeTempDir({ prefix: "nbx-hostns-cache-" });
  try {
    await assert.rejects(
      addNetworkList(
        list,
        { containerId: "c1", ifName: "eth0", netns: SELF },
        { binDirs: ["/nonexistent"], cacheDir: cache },
      ),
      (e: Error) => {
        assert.ok(e instanceof HostNetnsError, String(e));
        assert.match(e.message, /^CNI ADD \(hostnet\): netns "\/proc\/\d+\/ns\/net"/);
        return true;
      },
    );
    assert.deepEqual(await Array.fromAsync(Deno.readDir(cache)), []);
  } finally {
    await Deno.remove(cache, { recursive: true });
  }
});
