/**
 * A rootfs of erofs layer blobs (containerd's erofs snapshotter) as the VM sees it: each blob a
 * read-only virtio-blk device (QEMU `-drive …,readonly=on` on virtio-mmio, libkrun
 * `krun_add_disk2` read-only), named by its place in the device order, stacked by the guest under a
 * tmpfs upper (guest/erofs.ts). Checks the blobs before anything is started: each must be a
 * regular file with the erofs superblock magic, and the layers must fit the VM's device slots.
 */
import type { GuestRootfs } from "../guest_protocol.ts";
import { type SpecError, SpecValidationError } from "../spec/types.ts";
import type { Backend, VmPlan } from "./types.ts";

/** Byte offset of the erofs superblock in a blob. */
export const EROFS_SUPER_OFFSET = 1024;
/** The erofs superblock magic (little-endian u32 at EROFS_SUPER_OFFSET). */
export const EROFS_MAGIC = 0xe0f5e1e2;
/** virtio-blk serial of layer `i` under QEMU (`nerdbox-layer-<i>`). */
export const layerSerial = (i: number): string => `nerdbox-layer-${i}`;

/** QEMU microvm's virtio-mmio transports (QEMU 7.2: 24; a 25th device finds no virtio-bus). */
const QEMU_MMIO_SLOTS = 24;
/**
 * libkrun x86_64 gives MMIO devices IRQs 5-23 (19); its own devices (implicit console, balloon,
 * rng, vsock, root virtio-fs, the multiport console) take 6 of them.
 */
const LIBKRUN_MMIO_SLOTS = 19 - 6;
/** Single-letter virtio-blk names: vda … vdz. */
const LETTERS = "abcdefghijklmnopqrstuvwxyz";

/** How many layers a VM of `backend` with `nics` NICs can attach. */
export function maxLayers(backend: Backend, nics: number): number {
  if (backend === "qemu") {
    // vda is the runtime disk; one slot each for it, the virtio-serial channel and every NIC.
    return Math.min(LETTERS.length - 1, QEMU_MMIO_SLOTS - 2 - nics);
  }
  return Math.min(LETTERS.length, LIBKRUN_MMIO_SLOTS - nics);
}

/**
 * Guest device of layer `i`: under QEMU after the runtime disk (`/dev/vdb`…), under libkrun from
 * `/dev/vda` (its root is virtio-fs; disks are numbered in krun_add_disk2 order).
 */
export function layerDevice(backend: Backend, i: number): string {
  const n = backend === "qemu" ? i + 1 : i;
  if (!Number.isInteger(i) || i < 0 || n >= LETTERS.length) {
    throw new Error(`erofs layer ${i}: no single-letter virtio-blk name for it`);
  }
  return `/dev/vd${LETTERS[n]}`;
}

/** The GuestRootfs for a plan's layers (uppermost first). */
export function layersGuestRootfs(backend: Backend, layers: string[]): GuestRootfs {
  return { kind: "layers", devices: layers.map((_, i) => layerDevice(backend, i)) };
}

/** Number of NICs the VM will get (a QEMU TSI plan gets one for its private passt). */
function nicCount(plan: Pick<VmPlan, "backend" | "network">): number {
  if (plan.network.kind === "nics") return plan.network.nics.length;
  return plan.backend === "qemu" ? 1 : 0;
}

/** Why `path` is not an erofs blob (undefined when it is). */
export async function erofsBlobProblem(path: string): Promise<string | undefined> {
  if (!path.startsWith("/")) return "expected an absolute path";
  let st: Deno.FileInfo;
  try {
    st = await Deno.stat(path);
  } catch (err) {
    return err instanceof Deno.errors.NotFound
      ? "no such file"
      : `cannot stat it: ${(err as Error).message}`;
  }
  if (!st.isFile) return "not a regular file";
  const head = new Uint8Array(4);
  let f: Deno.FsFile | undefined;
  try {
    f = await Deno.open(path, { read: true });
    await f.seek(EROFS_SUPER_OFFSET, Deno.SeekMode.Start);
    let got = 0;
    while (got < 4) {
      const n = await f.read(head.subarray(got));
      if (n === null) break;
      got += n;
    }
    if (got < 4) return `too short for an erofs superblock (${st.size} bytes)`;
  } catch (err) {
    return `cannot read it: ${(err as Error).message}`;
  } finally {
    f?.close();
  }
  const magic = new DataView(head.buffer).getUint32(0, true);
  if (magic !== EROFS_MAGIC) {
    return `not an erofs image (magic 0x${magic.toString(16).padStart(8, "0")} at byte ` +
      `${EROFS_SUPER_OFFSET}, expected 0x${EROFS_MAGIC.toString(16)})`;
  }
  return undefined;
}

/**
 * Checks the layers of a plan: every blob an erofs image, and no more layers than the backend's
 * device slots. `fieldOf(i)` names where layer `i` came from (e.g. `rootfs[2].source`); `where`
 * names the whole list. Throws SpecValidationError with every problem found.
 */
export async function checkErofsLayers(
  plan: Pick<VmPlan, "backend" | "network">,
  layers: string[],
  where: string,
  fieldOf: (i: number) => string,
): Promise<void> {
  const errors: SpecError[] = [];
  if (layers.length === 0) {
    errors.push({ annotation: where, field: "", value: "", message: "no erofs layers" });
  }
  const max = maxLayers(plan.backend, nicCount(plan));
  if (layers.length > max) {
    errors.push({
      annotation: where,
      field: "",
      value: `${layers.length} layers`,
      message: `at most ${max} erofs layers fit the ${plan.backend} VM's virtio-blk devices ` +
        `(vd${plan.backend === "qemu" ? "b" : "a"}…, one per layer, besides ${nicCount(plan)} ` +
        `NIC(s)); merge layers (containerd's erofs snapshotter can) or use another snapshotter`,
    });
  }
  const problems = await Promise.all(layers.map(erofsBlobProblem));
  problems.forEach((p, i) => {
    if (p) {
      errors.push({
        annotation: where,
        field: fieldOf(i),
        value: layers[i],
        message: `erofs layer ${i}: ${p}`,
      });
    }
  });
  if (errors.length > 0) throw new SpecValidationError(errors);
}
