/** Which CRI containers boot the pod VM and which are created inside it (lib/shim/pod_member.ts). */
import assert from "node:assert/strict";
import {
  CONTAINER_TYPE_ANNOTATION,
  isPodSandbox,
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
