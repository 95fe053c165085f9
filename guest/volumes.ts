/**
 * Guest side of the VM's volume share (host side: lib/vm/volumes.ts): init mounts the share at
 * GUEST_VOLUMES_DIR at boot; a chrooted workload gets its bind mounts from init (bindVolumes);
 * crun containers get them from their spec, whose bind sources the host pointed into the share.
 */
import * as c from "./libc.ts";
import {
  GUEST_VOLUMES_DIR,
  type GuestVolumeMount,
  type GuestVolumes,
} from "../lib/guest_protocol.ts";
import { RootfsError } from "./mounts.ts";
import { mountVirtiofs } from "./virtiofs.ts";

/** Mounts the volume share at GUEST_VOLUMES_DIR (RootfsError on failure). */
export function mountVolumeShare(v: GuestVolumes): void {
  try {
    Deno.mkdirSync(GUEST_VOLUMES_DIR, { recursive: true, mode: 0o755 });
    mountVirtiofs(v.tag, GUEST_VOLUMES_DIR);
  } catch (err) {
    throw new RootfsError(
      `cannot mount the volume share (virtio-fs tag "${v.tag}") on ${GUEST_VOLUMES_DIR}: ${
        err instanceof Error ? err.message : err
      }`,
    );
  }
}

/**
 * `root` + `dest`, refusing a symlink on the way (a container's symlink must not move a mount out
 * of its root); creates missing directories, and the last component as a directory or an empty
 * file as `dir` says.
 */
export function mountTarget(root: string, dest: string, dir: boolean): string {
  const parts = dest.split("/").filter((p) => p && p !== ".");
  if (parts.includes("..")) throw new Error(`destination ${dest}: expected no ..`);
  let path = root;
  for (const [i, part] of parts.entries()) {
    path = `${path}/${part}`;
    const last = i === parts.length - 1;
    let st: Deno.FileInfo | undefined;
    try {
      st = Deno.lstatSync(path);
    } catch { /* missing */ }
    if (st?.isSymlink) throw new Error(`destination ${dest}: ${path} is a symlink`);
    if (st) continue;
    if (!last || dir) Deno.mkdirSync(path, { mode: 0o755 });
    else Deno.writeFileSync(path, new Uint8Array(), { mode: 0o644 });
  }
  return path;
}

/** Binds each mount from the share into the chrooted workload's `root` (RootfsError on failure). */
export function bindVolumes(root: string, mounts: GuestVolumeMount[]): void {
  for (const m of mounts) {
    const src = `${GUEST_VOLUMES_DIR}/${m.source}`;
    try {
      const dst = mountTarget(root, m.destination, Deno.statSync(src).isDirectory);
      c.mount(src, dst, "", c.MS.BIND | (m.recursive ? c.MS.REC : 0));
      // An rbind's `ro` is the host's (top mount only, as OCI's `ro`): here the share is one
      // filesystem, and a read-only remount would cover the source's submounts too.
      if (m.readOnly && !m.recursive) {
        c.mount("", dst, "", c.MS.REMOUNT | c.MS.BIND | c.MS.RDONLY);
      }
    } catch (err) {
      throw new RootfsError(
        `cannot bind volume ${m.source} on ${m.destination}: ${
          err instanceof Error ? err.message : err
        }`,
      );
    }
  }
}

/** True when a spec mount's source is in the (mounted) volume share: crun binds it as it is. */
export function isShareSource(source: unknown): boolean {
  if (typeof source !== "string" || !source.startsWith(`${GUEST_VOLUMES_DIR}/`)) return false;
  if (source.split("/").includes("..")) return false;
  try {
    Deno.statSync(source);
    return true;
  } catch {
    return false;
  }
}
