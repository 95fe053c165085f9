/** A small VmPlan for tests that start the QEMU backend directly (TCG, 1 vCPU, 256 MiB). */
import type { VmPlan } from "../../lib/vm/types.ts";

/** What differs between the tests' plans. */
export interface QemuTestPlan {
  id: string;
  rootfs: string;
  stateDir: string;
  /** The workload's argv. */
  args: string[];
  /** Its environment (default none). */
  env?: string[];
  /** Guest hostname (default "nbxq"). */
  hostname?: string;
  /** Default: no NICs. */
  network?: VmPlan["network"];
}

/** The plan: root uid/gid, cwd `/`, no terminal. */
export function qemuTestPlan(p: QemuTestPlan): VmPlan {
  return {
    id: p.id,
    backend: "qemu",
    cpus: 1,
    memoryMiB: 256,
    rootfs: p.rootfs,
    hostname: p.hostname ?? "nbxq",
    process: { args: p.args, env: p.env ?? [], cwd: "/", uid: 0, gid: 0, terminal: false },
    network: p.network ?? { kind: "nics", nics: [] },
    stateDir: p.stateDir,
    accel: "tcg",
  };
}
