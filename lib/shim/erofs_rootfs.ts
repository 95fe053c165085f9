/**
 * The container rootfs at Create: when containerd hands over erofs layers (containerd ≥ 2.2's
 * `erofs` + `format/…` mounts, or 2.1's overlay with `layer.erofs` blobs behind its lowerdirs,
 * lib/spec/erofs_mounts.ts), the layer blobs become the plan's `layers` (read-only block devices,
 * lib/vm/erofs_layers.ts) and nothing is mounted on the host; any other mount list is mounted on
 * `<bundle>/rootfs` as before (lib/shim/mounts.ts).
 */
import {
  erofsLayersBehindOverlay,
  ErofsMountError,
  type ErofsRootfs,
  parseErofsMounts,
} from "../spec/erofs_mounts.ts";
import { SpecValidationError } from "../spec/types.ts";
import { checkErofsLayers } from "../vm/erofs_layers.ts";
import type { VmPlan } from "../vm/types.ts";
import { mountRootfs, type RootfsMount } from "./mounts.ts";

/** How errors name the request field the mounts came from. */
const FIELD = "CreateTaskRequest.rootfs";

/** erofs layers found in `mounts`, with the request field each came from. */
interface FoundLayers {
  rootfs: ErofsRootfs;
  fields: string[];
}

function isFile(path: string): boolean {
  try {
    return Deno.statSync(path).isFile;
  } catch {
    return false;
  }
}

/**
 * The erofs form of `mounts` (undefined when it is not one); throws SpecValidationError naming the
 * mount when it is the form but malformed.
 */
export function findErofsLayers(mounts: RootfsMount[]): FoundLayers | undefined {
  let rootfs: ErofsRootfs | undefined;
  try {
    rootfs = parseErofsMounts(mounts);
  } catch (err) {
    if (!(err instanceof ErofsMountError)) throw err;
    throw new SpecValidationError([{
      annotation: FIELD,
      field: "",
      value: "",
      message: err.message,
    }]);
  }
  if (rootfs) {
    const fields = rootfs.layers.map((src) => {
      const i = mounts.findIndex((m) => m.type === "erofs" && m.source === src);
      return `[${i}].source`;
    });
    return { rootfs, fields };
  }
  if (mounts.length !== 1) return undefined;
  rootfs = erofsLayersBehindOverlay(mounts[0], isFile);
  if (!rootfs) return undefined;
  return { rootfs, fields: rootfs.layers.map((_, i) => `[0].options lowerdir #${i}`) };
}

/**
 * Takes the container's rootfs for `plan`: erofs layers become `plan.layers` after every blob was
 * checked (exists, is erofs, fits the VM's devices); otherwise the mounts are mounted on `target`.
 * Returns whether something was mounted on the host (to unmount at Delete). A pod member's rootfs
 * is streamed from the host directory into the running pod VM, so erofs layers cannot serve it.
 */
export async function takeRootfs(
  plan: VmPlan,
  mounts: RootfsMount[],
  target: string,
  podMember: boolean,
): Promise<boolean> {
  if (mounts.length === 0) return false;
  const found = findErofsLayers(mounts);
  if (found && podMember && mounts.some((m) => m.type === "erofs")) {
    throw new SpecValidationError([{
      annotation: FIELD,
      field: "",
      value: mounts.map((m) => m.type).join(","),
      message: "a container joining a pod VM needs a rootfs the host can mount (its files are " +
        "copied into the running VM, which cannot attach new layer devices): use the overlayfs " +
        "snapshotter for pod containers",
    }]);
  }
  if (found && !podMember) {
    await checkErofsLayers(plan, found.rootfs.layers, FIELD, (i) => found.fields[i]);
    plan.layers = [...found.rootfs.layers];
    return false;
  }
  await mountRootfs(mounts, target);
  return true;
}
