/**
 * Guest side of virtio-fs shares (host side: lib/vm/virtiofs.ts, or libkrun's built-in device):
 * mounts a share by its tag. Used for the container rootfs; other shared host paths (bind mounts)
 * mount the same way: `mountVirtiofs(tag, target, { readOnly })`.
 */
import * as c from "./libc.ts";

/** Options of mountVirtiofs. */
export interface VirtiofsMountOptions {
  /** Mount read-only (the only read-only enforcement with QEMU 7.2's virtiofsd). */
  readOnly?: boolean;
}

/**
 * Mounts the virtio-fs share `tag` at `target` (which must exist); throws on failure, naming the
 * tags the VM does have (the kernel answers an unknown tag with a bare EINVAL).
 */
export function mountVirtiofs(tag: string, target: string, opts: VirtiofsMountOptions = {}): void {
  try {
    c.mount(tag, target, "virtiofs", opts.readOnly ? c.MS.RDONLY : 0, "");
  } catch (err) {
    const tags = virtiofsTags();
    if (tags === undefined || tags.includes(tag)) throw err;
    const have = tags.length > 0 ? `only ${tags.map((t) => JSON.stringify(t)).join(", ")}` : "none";
    throw new Error(
      `${err instanceof Error ? err.message : err}; virtio-fs tags in this VM: ${have}`,
    );
  }
}

/** The tags of this VM's virtio-fs devices (`/sys/fs/virtiofs/<n>/tag`, Linux ≥ 6.9), if listed. */
export function virtiofsTags(sysDir = "/sys/fs/virtiofs"): string[] | undefined {
  try {
    const tags: string[] = [];
    for (const e of Deno.readDirSync(sysDir)) {
      try {
        tags.push(Deno.readTextFileSync(`${sysDir}/${e.name}/tag`).trim());
      } catch { /* not a device entry */ }
    }
    return tags.sort();
  } catch {
    return undefined;
  }
}
