/** Starts a VmPlan on its backend: libkrun (a `nerdbox vmm` child) or QEMU (lib/vm/qemu.ts). */
import type { VmHandle, VmPlan, VmStdio } from "./types.ts";

/** The QEMU backend's entry point (lib/vm/qemu.ts). */
type StartQemuVm = (plan: VmPlan, stdio: VmStdio) => Promise<VmHandle>;

/** Starts the VM described by `plan` and returns its handle (the caller disposes it). */
export async function startVm(plan: VmPlan, stdio: VmStdio): Promise<VmHandle> {
  if (plan.backend === "libkrun") {
    const { startLibkrunVm } = await import("./libkrun.ts");
    return await startLibkrunVm(plan, stdio);
  }
  // Imported by a computed specifier so this module loads before qemu.ts exists.
  const qemuModule = "./qemu.ts";
  let startQemuVm: StartQemuVm | undefined;
  try {
    startQemuVm = (await import(qemuModule) as { startQemuVm?: StartQemuVm }).startQemuVm;
  } catch (e) {
    throw new Error(`the QEMU backend is not available: ${(e as Error).message}`);
  }
  if (typeof startQemuVm !== "function") {
    throw new Error("the QEMU backend is not available: lib/vm/qemu.ts exports no startQemuVm");
  }
  return await startQemuVm(plan, stdio);
}
