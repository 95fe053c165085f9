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

/** Mounts the virtio-fs share `tag` at `target` (which must exist); throws on failure. */
export function mountVirtiofs(tag: string, target: string, opts: VirtiofsMountOptions = {}): void {
  c.mount(tag, target, "virtiofs", opts.readOnly ? c.MS.RDONLY : 0, "");
}
