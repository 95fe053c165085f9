import assert from "node:assert/strict";
import { DEFAULT_CNI_BIN_DIR, DEFAULT_CNI_CONF_DIR, podPorts } from "../../lib/net/cni_session.ts";
import { attachSpecToCni, CNI_RUN_FLAGS, cniRunFlags } from "../../lib/cli/cni_flags.ts";

Deno.test("cni session: --cni flags and their defaults", () => {
  assert.deepEqual(Object.keys(CNI_RUN_FLAGS), [
    "cni",
    "cni-conf-dir",
    "cni-bin-dir",
    "cni-network",
  ]);
  assert.deepEqual(cniRunFlags({}), {});
  assert.deepEqual(cniRunFlags({ cni: true }), {
    cni: { confDir: DEFAULT_CNI_CONF_DIR, binDir: DEFAULT_CNI_BIN_DIR },
  });
  assert.equal(DEFAULT_CNI_CONF_DIR, "/etc/cni/net.d");
  assert.equal(DEFAULT_CNI_BIN_DIR, "/opt/cni/bin:/usr/lib/cni");
  assert.deepEqual(
    cniRunFlags({ cni: true, "cni-conf-dir": "/c", "cni-bin-dir": "/b", "cni-network": "n" }),
    { cni: { confDir: "/c", binDir: "/b", network: "n" } },
  );
  assert.throws(() => cniRunFlags({ "cni-conf-dir": "/c" }), /--cni-conf-dir needs --cni/);
});

Deno.test("cni session: inside the pod a published port is served on its container port", () => {
  assert.deepEqual(
    podPorts([{ hostIp: "127.0.0.1", hostPort: 18080, guestPort: 80, protocol: "tcp" }]),
    [{ hostPort: 80, guestPort: 80, protocol: "tcp" }],
  );
});

Deno.test("cni session: --cni refuses a spec that already names a netns, before touching anything", async () => {
  await assert.rejects(
    attachSpecToCni({ id: "x", netns: "/run/netns/given", ports: [] }, {
      confDir: "/nonexistent",
      binDir: "/nonexistent",
    }),
    /--cni makes its own network namespace; .*\(\/run\/netns\/given\)/,
  );
});
