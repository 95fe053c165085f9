/**
 * classifyVmmFailure (lib/vm/libkrun.ts): which cause a failed VMM gets. The no-/dev/kvm case is
 * also produced for real by tests/integration/run_libkrun_start_test.ts; the kvm_pvm case cannot be
 * produced on this machine, so its libkrun output here is a stand-in quoting the reference's text.
 */
import assert from "node:assert/strict";
import { classifyVmmFailure } from "../../lib/vm/libkrun.ts";

const NO_KVM = { usable: false, reason: "/dev/kvm does not exist (no KVM on this host)" };
const PVM = {
  usable: false,
  reason: "/dev/kvm is kvm_pvm (pagetable-based nested KVM), which cannot run the guest kernel",
};
const OK = { usable: true, reason: "/dev/kvm is usable" };

Deno.test("nerdbox vmm's own error lines win", () => {
  const out = "noise\nnerdbox vmm: krun_set_root(...) failed: EINVAL (-22)\nnerdbox vmm: second\n";
  assert.equal(
    classifyVmmFailure({ code: 125, signal: null }, out, OK),
    "krun_set_root(...) failed: EINVAL (-22)\nsecond",
  );
});

Deno.test("missing /dev/kvm: names the device and points to --backend qemu", () => {
  const out = "thread '<unnamed>' panicked at src/vmm/src/linux/vstate.rs:447:30:\n" +
    "Error creating the Kvm object: Error(2)\n";
  const msg = classifyVmmFailure({ code: 134, signal: "SIGABRT" }, out, NO_KVM);
  assert.match(msg, /^libkrun cannot run a VM on this host: \/dev\/kvm does not exist/);
  assert.match(msg, /krun_start_enter: "Error creating the Kvm object: Error\(2\)"/);
  assert.match(msg, /was killed by SIGABRT/);
  assert.match(msg, /use --backend qemu/);
});

Deno.test("kvm_pvm: KVM_EXIT_INTERNAL_ERROR in the log, or a bare exit 1 on a PVM host", () => {
  const logged = classifyVmmFailure(
    { code: 1, signal: null },
    "[ERROR vmm::linux::vstate] Received KVM_EXIT_INTERNAL_ERROR signal\n",
    PVM,
  );
  assert.match(
    logged,
    /^the guest kernel died during boot with KVM_EXIT_INTERNAL_ERROR \(\/dev\/kvm is kvm_pvm/,
  );
  assert.match(logged, /exited with status 1\. .*use --backend qemu/);
  const silent = classifyVmmFailure({ code: 1, signal: null }, "", PVM);
  assert.match(silent, /KVM_EXIT_INTERNAL_ERROR/);
});

Deno.test("anything else: the raw status and the last output lines", () => {
  const msg = classifyVmmFailure({ code: 127, signal: null }, "a\nb\nlast words\n", OK);
  assert.match(msg, /^the VMM exited with status 127 before the workload reported an exit status/);
  assert.match(msg, /last words$/);
  assert.doesNotMatch(msg, /--backend qemu/);
});
