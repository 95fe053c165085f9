/** Which CRI containers boot the pod VM and which are created inside it (lib/shim/pod_member.ts). */
import assert from "node:assert/strict";
import { parseMac } from "../../lib/spec/mac.ts";
import {
  CONTAINER_TYPE_ANNOTATION,
  isPodSandbox,
  podNetworkWarnings,
  podSandboxOf,
} from "../../lib/shim/pod_member.ts";
import { SANDBOX_ANNOTATION } from "../../lib/shim/address.ts";

Deno.test("pod member: the sandbox boots the VM, the pod's containers join it", () => {
  const sandbox = { [CONTAINER_TYPE_ANNOTATION]: "sandbox", [SANDBOX_ANNOTATION]: "s1" };
  const member = { [CONTAINER_TYPE_ANNOTATION]: "container", [SANDBOX_ANNOTATION]: "s1" };
  assert.equal(isPodSandbox(sandbox), true);
  assert.equal(podSandboxOf(sandbox), undefined);
  assert.equal(isPodSandbox(member), false);
  assert.equal(podSandboxOf(member), "s1");
  // A plain container (ctr run) is a pod of one: neither.
  assert.equal(isPodSandbox({}), false);
  assert.equal(podSandboxOf({}), undefined);
  assert.equal(podSandboxOf({ [CONTAINER_TYPE_ANNOTATION]: "container" }), undefined);
});

Deno.test("pod member: its own network annotations are not applied, and it is said", () => {
  const none = { networks: [], ctrNetworks: [] };
  assert.deepEqual(podNetworkWarnings(none, "s1"), []);
  const dns = { nameservers: ["10.0.0.1"], search: [], options: [] };
  const ctr = { index: 0, vmmac: parseMac("02:00:00:00:00:01"), addrs: [], gateways: [] };
  assert.deepEqual(podNetworkWarnings({ ...none, ctrNetworks: [ctr], dns }, "s1"), [
    "io.containerd.nerdbox.ctr.network.N, ctr.dns: not applied to a container created in pod " +
    "s1's VM: it shares the network and resolv.conf of the sandbox's VM",
  ]);
  // The sandbox itself (or a pod of one) applies them: no warning.
  assert.deepEqual(podNetworkWarnings({ ...none, dns }, undefined), []);
});
