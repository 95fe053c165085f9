/**
 * containerd 2.x's erofs snapshotter and differ for the test containerd: the config that turns them
 * on (the differ converts each layer with `mkfs.erofs --tar=f`, found on containerd's PATH: the
 * private erofs-utils of scripts/setup_erofs_utils.ts) and the checks that they can run here.
 */
import { exists } from "../../lib/fs.ts";
import { EROFS_UTILS_DIR } from "../../scripts/setup_erofs_utils.ts";

/** The directory put first on containerd's PATH so its erofs differ finds mkfs.erofs ≥ 1.7. */
export const EROFS_BIN_DIR = `${EROFS_UTILS_DIR}/bin`;

/** The erofs snapshotter's name (`ctr … --snapshotter erofs`). */
export const EROFS_SNAPSHOTTER = "erofs";

/**
 * Throws, naming what is missing, unless the erofs snapshotter can run: the private mkfs.erofs and
 * a kernel that lists erofs in /proc/filesystems (containerd skips the snapshotter otherwise).
 */
export async function checkErofsHost(): Promise<void> {
  if (!(await exists(`${EROFS_BIN_DIR}/mkfs.erofs`))) {
    throw new Error(
      `${EROFS_BIN_DIR}/mkfs.erofs is not installed (deno task setup builds it): the erofs ` +
        "snapshotter needs mkfs.erofs ≥ 1.7",
    );
  }
  const fs = await Deno.readTextFile("/proc/filesystems");
  if (!/\terofs$/m.test(fs)) {
    const mp = await new Deno.Command("modprobe", { args: ["erofs"], stderr: "null" }).output()
      .catch(() => undefined);
    if (!mp?.success || !/\terofs$/m.test(await Deno.readTextFile("/proc/filesystems"))) {
      throw new Error(
        "the host kernel has no erofs (not in /proc/filesystems, modprobe erofs failed): " +
          "containerd's erofs snapshotter needs it",
      );
    }
  }
}

/**
 * Config (version 3) lines for the erofs snapshotter beside overlayfs: the diff service tries the
 * erofs differ first (it declines layers of other snapshotters), and the transfer service (what
 * `ctr images import` uses) unpacks for both snapshotters.
 */
export function erofsConfigLines(platform = "linux/amd64"): string[] {
  const transfer = `plugins."io.containerd.transfer.v1.local"`;
  return [
    `[plugins."io.containerd.service.v1.diff-service"]`,
    `  default = ["erofs", "walking"]`,
    `[plugins."io.containerd.differ.v1.erofs"]`,
    `  mkfs_options = ["-T0", "--mkfs-time", "--sort=none"]`,
    `[[${transfer}.unpack_config]]`,
    `  platform = "${platform}"`,
    `  snapshotter = "overlayfs"`,
    `  differ = "walking"`,
    `[[${transfer}.unpack_config]]`,
    `  platform = "${platform}"`,
    `  snapshotter = "${EROFS_SNAPSHOTTER}"`,
    `  differ = "erofs"`,
  ];
}
