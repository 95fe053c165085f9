/**
 * Host bind mounts of a container's OCI spec (Kubernetes volumes, hostPath, configmaps, secrets,
 * the service-account token, CRI's /etc/hosts, /etc/hostname, /etc/resolv.conf; `ctr run --mount
 * type=bind,…`) → the VM's volume share (lib/vm/volumes.ts). The first container of a VM gets
 * them through VmPlan.volumes (bound before the guest boots); a pod's later containers through
 * the running VM's share (bound before the container is created, unbound when it is deleted).
 * Each bind of container `id` is `<id>/<n>` in the share, `n` its index in `spec.mounts`; crun's
 * spec is rewritten to bind from GUEST_VOLUMES_DIR/<id>/<n>. Other mounts (and a bind on /dev/shm)
 * are left as they are.
 */
import { GUEST_VOLUMES_DIR, type GuestVolumeMount } from "../guest_protocol.ts";
import { type SpecError, SpecValidationError } from "../spec/types.ts";
import type { VmHandle, VmPlan, VolumeBind } from "../vm/types.ts";
import { virtiofsAvailable } from "../vm/virtiofs.ts";
import { parseResolvConf } from "../net/resolv_conf.ts";

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === "object" && v !== null && !Array.isArray(v);
const ID_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

/** A spec's host bind mounts, what the guest makes of them, and the spec rewritten for crun. */
export interface SpecBinds {
  binds: VolumeBind[];
  /** For a chrooted workload: what init binds into its root. */
  mounts: GuestVolumeMount[];
  /** The spec with each bind's source pointing into GUEST_VOLUMES_DIR. */
  spec: Obj;
}

/** True for a bind mount (`type: bind`, or a `bind`/`rbind` option). */
export function isBindMount(m: Obj): boolean {
  const opts = Array.isArray(m.options) ? m.options : [];
  return m.type === "bind" || opts.includes("bind") || opts.includes("rbind");
}

/** Finds the bind mounts of `spec` (container `id`); errors name the field and the value. */
export function specBinds(spec: Obj, id: string): SpecBinds {
  if (!ID_RE.test(id) || id.includes("..")) {
    throw new SpecValidationError([{
      annotation: "container id",
      field: "",
      value: id,
      message: "expected [A-Za-z0-9][A-Za-z0-9_.-]{0,127} (it names its volume share directory)",
    }]);
  }
  const out: Obj = structuredClone(spec);
  const binds: VolumeBind[] = [], mounts: GuestVolumeMount[] = [], errors: SpecError[] = [];
  if (!Array.isArray(out.mounts)) return { binds, mounts, spec: out };
  out.mounts = out.mounts.map((m, i) => {
    if (!isObj(m) || !isBindMount(m)) return m;
    const err = (field: string, value: unknown, message: string) =>
      errors.push({ annotation: `mounts[${i}]`, field, value: String(value), message });
    const { source, destination } = m;
    // The pod's shm (CRI binds a host tmpfs) stays the guest's own, as in Kata: shared memory
    // through virtio-fs would only add FUSE round trips, the pod's containers share one VM.
    if (typeof destination === "string" && destination.replace(/\/+$/, "") === "/dev/shm") {
      return m;
    }
    if (typeof source !== "string" || !source.startsWith("/")) {
      err("source", source, "expected an absolute host path");
      return m;
    }
    if (typeof destination !== "string" || !destination.startsWith("/")) {
      err("destination", destination, "expected an absolute path in the container");
      return m;
    }
    const opts = (Array.isArray(m.options) ? m.options : []).filter((o) => typeof o === "string");
    const target = `${id}/${i}`;
    const readOnly = opts.includes("ro"), recursive = opts.includes("rbind");
    binds.push({ source, target, readOnly, recursive });
    mounts.push({ source: target, destination, readOnly, recursive });
    // In the guest the share is one filesystem: a read-only rbind there would make the source's
    // submounts read-only too. The host's side is read-only at the top mount only (OCI's `ro`),
    // so the guest leaves an rbind's `ro` to it (writes fail with EROFS from the host).
    const guestOpts = recursive && readOnly ? opts.filter((o) => o !== "ro") : opts;
    return { ...m, type: "bind", source: `${GUEST_VOLUMES_DIR}/${target}`, options: guestOpts };
  });
  if (errors.length > 0) throw new SpecValidationError(errors);
  return { binds, mounts, spec: out };
}

/** Refuses (naming the mount) a bind source that is missing or neither a directory nor a file. */
export async function checkSources(binds: VolumeBind[]): Promise<void> {
  const errors: SpecError[] = [];
  for (const b of binds) {
    const st = await Deno.stat(b.source).catch(() => null);
    if (!st?.isDirectory && !st?.isFile) {
      errors.push({
        annotation: `mounts[${b.target.slice(b.target.lastIndexOf("/") + 1)}]`,
        field: "source",
        value: b.source,
        message: st ? "expected a directory or a file" : "does not exist on the host",
      });
    }
  }
  if (errors.length > 0) throw new SpecValidationError(errors);
}

/** Why `plan`'s VM cannot have a volume share, or undefined: libkrun serves virtio-fs itself. */
export function volumeShareBlocker(
  plan: Pick<VmPlan, "backend">,
  virtiofsd?: string,
): string | undefined {
  return plan.backend === "qemu" ? virtiofsAvailable(virtiofsd) : undefined;
}

/**
 * Sets `plan.volumes` (and rewrites `plan.oci`) for the VM's first container: a pod sandbox always
 * gets a share (its later containers bind into it), any other container when it has binds. QEMU
 * without virtiofsd cannot share: there the binds are left out, with a warning.
 */
export async function planVolumes(
  plan: VmPlan,
  spec: Obj,
  id: string,
  podSandbox: boolean,
  warn: (msg: string) => void,
  why = volumeShareBlocker(plan),
): Promise<void> {
  const found = specBinds(spec, id);
  const dests = found.mounts.map((m) => m.destination).join(", ");
  if (why) {
    if (found.binds.length > 0) warn(`host bind mounts left out of the VM (${why}): ${dests}`);
    await dnsFromResolvBind(plan, found);
    return;
  }
  if (found.binds.length === 0 && !podSandbox) return;
  await checkSources(found.binds);
  plan.volumes = { binds: found.binds, mounts: plan.oci ? [] : found.mounts };
  if (plan.oci) plan.oci = found.spec;
}

/**
 * Without a share, the spec's /etc/resolv.conf bind (CRI's, from the pod's dns_config) becomes
 * the VM's DNS settings, which init writes into /etc/resolv.conf; a plan that has DNS keeps it.
 */
async function dnsFromResolvBind(plan: VmPlan, found: SpecBinds): Promise<void> {
  const i = found.mounts.findIndex((m) => m.destination.replace(/\/+$/, "") === "/etc/resolv.conf");
  if (plan.dns || i < 0) return;
  const text = await Deno.readTextFile(found.binds[i].source).catch(() => undefined);
  if (text !== undefined) plan.dns = parseResolvConf(text);
}

/**
 * Binds the host mounts of container `id` (a pod's later container) into the running pod VM's
 * share; returns the spec for crun and the release (unbind) to call when it is deleted. Without
 * a share (QEMU without virtiofsd) the binds are left out, with a warning.
 */
export async function bindMemberVolumes(
  pod: VmHandle,
  id: string,
  spec: Obj,
  warn: (msg: string) => void,
): Promise<{ spec: Obj; release: () => Promise<void> }> {
  const found = specBinds(spec, id);
  if (found.binds.length === 0) return { spec, release: () => Promise.resolve() };
  const share = pod.volumes;
  if (!share) {
    const dests = found.mounts.map((m) => m.destination).join(", ");
    warn(`host bind mounts left out of the VM (the pod VM has no volume share): ${dests}`);
    return { spec, release: () => Promise.resolve() };
  }
  await checkSources(found.binds);
  await share.bind(found.binds);
  let released: Promise<void> | undefined;
  return { spec: found.spec, release: () => (released ??= share.release(id)) };
}
