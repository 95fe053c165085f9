/**
 * Directory → ext4 disk image with `mke2fs -d` (e2fsprogs): the container's rootfs for the QEMU
 * backend (the Debian guest kernel has no 9p and no virtiofsd is packaged), and the guest runtime disk.
 */

/** Options for `makeExt4Image`. */
export interface Ext4Options {
  /** Filesystem label (≤ 16 bytes). */
  label: string;
  /** Free space to leave beyond the content, in bytes. */
  extraBytes?: number;
}

/** Total apparent size of the regular files and symlinks under `dir` plus per-entry overhead. */
export async function treeBytes(dir: string): Promise<number> {
  let total = 0;
  const walk = async (d: string): Promise<void> => {
    for await (const e of Deno.readDir(d)) {
      const p = `${d}/${e.name}`;
      const st = await Deno.lstat(p);
      total += 4096; // inode + directory entry + block rounding, roughly
      if (st.isFile) total += Math.ceil(st.size / 4096) * 4096;
      else if (st.isDirectory) await walk(p);
    }
  };
  await walk(dir);
  return total;
}

/**
 * Writes an ext4 image of `srcDir` to `out` (no journal: the image is either read-only or
 * thrown away after the run). The image is sized from the content plus `extraBytes`.
 */
export async function makeExt4Image(srcDir: string, out: string, opts: Ext4Options): Promise<void> {
  const st = await Deno.stat(srcDir).catch(() => null);
  if (!st?.isDirectory) {
    throw new Error(`rootfs: ${JSON.stringify(srcDir)} is not a directory`);
  }
  if (new TextEncoder().encode(opts.label).length > 16) {
    throw new Error(`ext4 label ${JSON.stringify(opts.label)} is longer than 16 bytes`);
  }
  const content = await treeBytes(srcDir);
  const bytes = Math.ceil(content * 1.15) + (opts.extraBytes ?? 0) + 16 * 1024 * 1024;
  const kib = Math.ceil(bytes / 1024);
  let result: Deno.CommandOutput;
  try {
    result = await new Deno.Command("mke2fs", {
      args: [
        "-q",
        "-F",
        "-t",
        "ext4",
        "-O",
        "^has_journal",
        "-L",
        opts.label,
        "-E",
        "root_owner=0:0",
        "-d",
        srcDir,
        out,
        `${kib}k`,
      ],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
  } catch (err) {
    throw new Error(
      `rootfs: cannot run mke2fs (apt-get install e2fsprogs): ${(err as Error).message}`,
    );
  }
  if (!result.success) {
    await Deno.remove(out).catch(() => {});
    const msg = new TextDecoder().decode(result.stderr).trim();
    throw new Error(`rootfs: mke2fs -d ${srcDir} failed (exit ${result.code}): ${msg}`);
  }
}

/**
 * Builds this run's rootfs disk from the container's rootfs directory into `<stateDir>/rootfs.ext4`
 * (with 256 MiB free, so a guest may also mount it read-write) and returns its path.
 */
export async function makeRootfsImage(rootfs: string, stateDir: string): Promise<string> {
  const out = `${stateDir}/rootfs.ext4`;
  await makeExt4Image(rootfs, out, { label: "nerdbox-rootfs", extraBytes: 256 * 1024 * 1024 });
  return out;
}
