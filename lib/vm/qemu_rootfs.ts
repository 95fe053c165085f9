/**
 * How a QEMU run gets its container rootfs: the directory shared with virtio-fs (no copy; the
 * container's writes land in the directory, as with runc and libkrun), or — only where sharing
 * cannot work — a per-run ext4 copy (`mke2fs -d`) attached as `/dev/vdb` under a tmpfs overlay;
 * or, for a plan of erofs layers, the layer blobs themselves, read-only (no share, no copy).
 */
import type { GuestRootfs } from "../guest_protocol.ts";
import { makeRootfsImage } from "./rootfs_image.ts";
import { checkErofsLayers, layersGuestRootfs } from "./erofs_layers.ts";
import type { VmPlan } from "./types.ts";
import { ROOTFS_GUEST_DEVICE } from "./qemu_argv.ts";
import { startVirtiofsd, virtiofsAvailable, type VirtiofsShare } from "./virtiofs.ts";
import { fitsSunPath, SUN_PATH_MAX } from "../spec/socket_path.ts";

/** The virtio-fs tag of the container rootfs (the same as libkrun's). */
export const QEMU_ROOTFS_TAG = "rootfs";

/** What the run attaches for its rootfs. */
export interface QemuRootfs {
  guest: GuestRootfs;
  /** erofs layer blobs attached read-only (`VmPlan.layers`). */
  layers?: string[];
  /** The per-run ext4 copy (fallback only). */
  disk?: string;
  /** The rootfs share (virtio-fs). */
  share?: VirtiofsShare;
  /** Why the ext4 copy was used (absent when shared). */
  fallbackReason?: string;
}

/**
 * Why the rootfs cannot be shared (undefined when it can): `NERDBOX_QEMU_ROOTFS=ext4` asks for
 * the copy; not root or no virtiofsd; a path virtiofsd's option list cannot carry (a comma); a
 * socket path too long for `sun_path`.
 */
export function shareBlocker(rootfs: string, socket: string): string | undefined {
  if (Deno.env.get("NERDBOX_QEMU_ROOTFS") === "ext4") return "NERDBOX_QEMU_ROOTFS=ext4";
  const why = virtiofsAvailable();
  if (why) return why;
  if (rootfs.includes(",")) return `the rootfs path ${JSON.stringify(rootfs)} has a comma`;
  if (!fitsSunPath(socket)) {
    return `the socket path ${socket} is longer than ${SUN_PATH_MAX} bytes`;
  }
  return undefined;
}

/**
 * erofs layers: checks them and attaches them as they are. Otherwise shares `plan.rootfs` (starting its virtiofsd, socket `<socketDir>/fs0.sock`, pid given to `onSpawn`
 * before anything waits) or builds the ext4 copy in `stateDir`. The caller stops the share or
 * removes the disk at the end.
 */
export async function prepareQemuRootfs(
  plan: Pick<VmPlan, "rootfs" | "layers" | "backend" | "network">,
  stateDir: string,
  socketDir: string,
  onSpawn: (pid: number) => Promise<void> | void,
): Promise<QemuRootfs> {
  if (plan.layers) {
    // Checked again here: a blob may have gone since the plan was made.
    await checkErofsLayers(plan, plan.layers, "rootfs", (i) => `layers[${i}]`);
    return { guest: layersGuestRootfs("qemu", plan.layers), layers: [...plan.layers] };
  }
  const rootfs = plan.rootfs;
  const socket = `${socketDir}/fs0.sock`;
  const blocker = shareBlocker(rootfs, socket);
  if (blocker === undefined) {
    const st = await Deno.stat(rootfs).catch(() => null);
    if (!st?.isDirectory) throw new Error(`rootfs: ${JSON.stringify(rootfs)} is not a directory`);
    const share = await startVirtiofsd({ tag: QEMU_ROOTFS_TAG, source: rootfs, socket, onSpawn });
    return { guest: { kind: "virtiofs", tag: QEMU_ROOTFS_TAG }, share };
  }
  const disk = await makeRootfsImage(rootfs, stateDir);
  return {
    guest: { kind: "block", device: ROOTFS_GUEST_DEVICE, fstype: "ext4" },
    disk,
    fallbackReason: blocker,
  };
}
