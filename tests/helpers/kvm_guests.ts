/**
 * The one place tests decide whether this host's /dev/kvm runs guests (so libkrun can boot): the
 * product's own classification (lib/vm/plan.ts kvmStatus: present, opens read-write, not
 * kvm_pvm). Cases that need a libkrun guest fail loudly elsewhere; on hosts without such a
 * /dev/kvm the nested rig (tests/nested/nested_libkrun_test.ts) runs them inside an L1 that has one.
 */
import { type KvmStatus, kvmStatus } from "../../lib/vm/plan.ts";

/** This host's answer, computed once. */
export const guestKvm: KvmStatus = kvmStatus();

/** Boot timeout for libkrun guests in tests: generous, nested emulation is slow. */
export const LIBKRUN_TEST_BOOT_TIMEOUT_MS = 300_000;

/** Throws (the test fails) unless /dev/kvm runs guests here, naming the cause and the rig. */
export function requireGuestKvm(): void {
  if (guestKvm.usable) return;
  throw new Error(
    `this case boots real libkrun guests and needs a /dev/kvm that runs them; here ` +
      `${guestKvm.reason}. It runs inside the nested rig: tests/nested/nested_libkrun_test.ts`,
  );
}

/** Deno.test for a case needing libkrun guests: fails (never skips) where they cannot boot. */
export function libkrunTest(name: string, fn: () => Promise<void>): void {
  Deno.test(name, async () => {
    requireGuestKvm();
    await fn();
  });
}
