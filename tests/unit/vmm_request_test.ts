/**
 * lib/vm/vmm_request.ts: the `nerdbox vmm` child reads its request field by field; a request from
 * planVm round-trips through JSON, and every bad field is named with its value.
 */
import assert from "node:assert/strict";
import { buildSandboxSpec } from "../../lib/spec/sandbox.ts";
import { planVm } from "../../lib/vm/plan.ts";
import {
  parseVmmRequest,
  VMM_REQUEST_VERSION,
  type VmmRequest,
  VmmRequestError,
} from "../../lib/vm/vmm_request.ts";

function request(netFlags: string[] = [], publish: string[] = []): VmmRequest {
  const { spec } = buildSandboxSpec({
    id: "vmm-req",
    rootfs: "/srv/rootfs",
    process: { args: ["/bin/true"], env: ["A=1"], cwd: "/", uid: 0, gid: 0, terminal: false },
    netFlags,
    publish,
  });
  return {
    version: VMM_REQUEST_VERSION,
    plan: planVm(spec, { backend: "libkrun", stateDir: "/run/nerdbox/vmm-req" }),
    guest: { rootDir: "/g", path: "/opt/deno", args: ["run"], env: ["X=1"] },
    channelSocket: "/run/nerdbox/vmm-req/ctl.sock",
    consoleLog: "/run/nerdbox/vmm-req/console.log",
    parentPid: 4242,
  };
}

const NET = "socket=/run/x.sock,mode=unixgram,mac=5A:94:EF:E4:0C:EE,addr=10.0.0.2/24,vfkit=true";

Deno.test("a planned request round-trips through JSON unchanged", () => {
  const layered = request();
  layered.plan.layers = ["/snap/2/layer.erofs", "/snap/1/layer.erofs"];
  // The volume share's directory travels in the request (the VMM serves it as virtio-fs).
  const shared = { ...request(), volumesDir: "/run/nerdbox/vmm-req/volumes" };
  for (const r of [request([], ["8080:80"]), request([NET]), layered, shared]) {
    assert.deepEqual(parseVmmRequest(JSON.parse(JSON.stringify(r))), r);
  }
});

Deno.test("every bad field is named, with its value and what was expected", () => {
  // deno-lint-ignore no-explicit-any
  const bad = (mutate: (r: Record<string, any>) => void, re: RegExp) => {
    const r = JSON.parse(JSON.stringify(request([NET])));
    mutate(r);
    assert.throws(() => parseVmmRequest(r), (e: unknown) => {
      assert.ok(e instanceof VmmRequestError, String(e));
      assert.match(e.message, re);
      return true;
    });
  };
  bad((r) => delete r.version, /^field version=undefined: expected 1 \(the request was written/);
  bad((r) => (r.version = 2), /^field version=2: expected 1/);
  bad((r) => (r.plan.cpus = 0), /^field plan\.cpus=0: expected an integer in 1\.\.255/);
  bad((r) => (r.volumesDir = "volumes"), /^field volumesDir="volumes": expected an absolute path/);
  bad((r) => (r.plan.backend = "qemu"), /^field plan\.backend="qemu": expected libkrun/);
  bad(
    (r) => (r.plan.network.nics[0].mac = "01:00:00:00:00:01"),
    /^field plan\.network\.nics\[0\]\.mac="01:00:00:00:00:01": expected a unicast MAC/,
  );
  bad(
    (r) => (r.plan.network.nics[0].socket = `/${"x".repeat(120)}`),
    /^field plan\.network\.nics\[0\]\.socket="\/x+\.\.\.: expected at most 107 bytes/,
  );
  bad((r) => (r.plan.network.kind = "passt"), /^field plan\.network\.kind="passt": expected tsi/);
  bad(
    (r) => (r.plan.process.env = ["A", 1]),
    /^field plan\.process\.env\[1\]=1: expected a string/,
  );
  bad((r) => (r.guest.rootDir = "g"), /^field guest\.rootDir="g": expected an absolute path/);
  bad((r) => (r.plan.layers = "/a"), /^field plan\.layers="\/a": expected an array of absolute/);
  bad((r) => (r.plan.layers = ["a"]), /^field plan\.layers\[0\]="a": expected an absolute path/);
  bad((r) => (r.parentPid = "1"), /^field parentPid="1": expected an integer/);
  bad((r) => delete r.channelSocket, /^field channelSocket=undefined: expected a string/);
});
