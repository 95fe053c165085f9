/** Starts a VmPlan on its backend: libkrun (a `nerdbox vmm` child) or QEMU (lib/vm/qemu.ts). */
import type { VmHandle, VmPlan, VmStdio } from "./types.ts";

/**
 * Starts the VM described by `plan` and returns its handle (the caller disposes it). Both backends
 * are imported by literal specifiers, loaded only when chosen, so the module graph (and therefore
 * `deno compile`) contains each of them.
 */
export async function startVm(plan: VmPlan, stdio: VmStdio): Promise<VmHandle> {
  if (plan.backend === "libkrun") {
    const { startLibkrunVm } = await import("./libkrun.ts");
    return await startLibkrunVm(plan, stdio);
  }
  const { startQemuVm } = await import("./qemu.ts");
  return await startQemuVm(plan, stdio);
}
