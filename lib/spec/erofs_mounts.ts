/**
 * Recognises a container rootfs made of erofs layer blobs in the mounts containerd sends
 * (CreateTaskRequest.rootfs), so the layers can reach the VM as read-only block devices instead of
 * being mounted on the host. Two forms:
 * - containerd ≥ 2.2 (mount manager): `erofs` mounts of the layer blobs (`ro`, `loop`), optionally
 *   preceded by a `mkfs/ext4` writable image (block mode; `ext4` once the mount manager made it), ended by a `format/mkdir/overlay` whose
 *   `lowerdir={{ overlay A B }}` / `{{ mount N }}` placeholders name the layer mounts (or a
 *   single `erofs` mount, or `format/bind` of one, for a read-only view).
 * - containerd 2.1 (`--snapshotter erofs`): an ordinary `overlay` whose lowerdirs are the host
 *   mount points `<root>/snapshots/<id>/fs` of blobs kept beside them as `<id>/layer.erofs`.
 * Typed result; every refusal names the mount index, the field and the value.
 */
/** One mount as containerd describes it (containerd.types.Mount, without target). */
export interface RootfsMount {
  type: string;
  source: string;
  options: string[];
}

/** Where the container's writes go. */
export type ErofsUpper =
  /** overlay upper and work directories on the host (shared into the VM). */
  | { kind: "dir"; upperdir: string; workdir: string }
  /**
   * a writable ext4 image (block mode): `mkfs/ext4` for the runtime to make (size in bytes), or
   * `ext4` already made by containerd's mount manager (no size).
   */
  | { kind: "image"; path: string; sizeBytes?: number }
  /** a read-only view: no upper. */
  | { kind: "readonly" };

/** A rootfs of erofs layers: blob paths in overlay `lowerdir` order (uppermost first). */
export interface ErofsRootfs {
  layers: string[];
  upper: ErofsUpper;
  /** overlay options other than lowerdir/upperdir/workdir and containerd's `X-containerd.*`. */
  overlayOptions: string[];
}

/** A mount list that looks like the erofs form but cannot be used. */
export class ErofsMountError extends Error {
  /** Builds the error; the message names the mount, field and value. */
  constructor(message: string) {
    super(message);
    this.name = "ErofsMountError";
  }
}

const MOUNT_REF = /^\{\{ *mount (\d+) *\}\}(\/.*)?$/;
const OVERLAY_REF = /^\{\{ *overlay (\d+) (\d+) *\}\}$/;

function option(m: RootfsMount, key: string): string | undefined {
  const hit = m.options.find((o) => o.startsWith(`${key}=`));
  return hit === undefined ? undefined : hit.slice(key.length + 1);
}

function refuse(i: number, m: RootfsMount, what: string): never {
  throw new ErofsMountError(`rootfs mount ${i} (type ${JSON.stringify(m.type)}): ${what}`);
}

/** The layer index a `{{ mount N }}` names; it must be an erofs layer mount. */
function layerAt(mounts: RootfsMount[], i: number, n: number, field: string, value: string) {
  if (n >= i || mounts[n]?.type !== "erofs") {
    refuse(i, mounts[i], `${field}=${JSON.stringify(value)}: mount ${n} is not an erofs layer`);
  }
  return mounts[n].source;
}

/** The image path an `{{ mount N }}/…` in block mode names (must be the mkfs/ext4 or ext4 mount). */
function imageRef(mounts: RootfsMount[], i: number, field: string, value: string): string {
  const m = MOUNT_REF.exec(value);
  const t = m ? mounts[Number(m[1])]?.type : undefined;
  if (!m || !(t === "ext4" || t?.startsWith("mkfs/"))) {
    refuse(
      i,
      mounts[i],
      `${field}=${JSON.stringify(value)}: expected {{ mount N }}/… of mkfs/ext4`,
    );
  }
  return mounts[Number(m[1])].source;
}

/**
 * Parses containerd ≥ 2.2's erofs mount list. Returns undefined when `mounts` is not that form
 * (e.g. an ordinary overlay or bind), throws ErofsMountError when it is but cannot be used.
 */
export function parseErofsMounts(mounts: RootfsMount[]): ErofsRootfs | undefined {
  if (!mounts.some((m) => m.type === "erofs")) return undefined;
  const last = mounts.length - 1;
  const tail = mounts[last];
  if (mounts.length === 1) {
    return { layers: [tail.source], upper: { kind: "readonly" }, overlayOptions: [] };
  }
  let upper: ErofsUpper = { kind: "readonly" };
  let image: RootfsMount | undefined;
  for (let i = 0; i < last; i++) {
    const m = mounts[i];
    if (m.type === "erofs") {
      if (!m.source.startsWith("/")) {
        refuse(i, m, `source ${JSON.stringify(m.source)}: expected an absolute blob path`);
      }
      if (m.options.some((o) => o.startsWith("device="))) {
        refuse(i, m, "option device=…: merged fsmeta layers are not supported");
      }
    } else if ((m.type === "mkfs/ext4" || m.type === "ext4") && i === 0) {
      image = m;
    } else {
      refuse(i, m, "expected erofs layer mounts (and a leading mkfs/ext4) before the overlay");
    }
  }
  if (tail.type === "format/bind") {
    const ref = MOUNT_REF.exec(tail.source);
    if (!ref || ref[2]) {
      refuse(last, tail, `source ${JSON.stringify(tail.source)}: expected {{ mount N }}`);
    }
    return {
      layers: [layerAt(mounts, last, Number(ref[1]), "source", tail.source)],
      upper: { kind: "readonly" },
      overlayOptions: [],
    };
  }
  if (tail.type !== "format/mkdir/overlay" && tail.type !== "format/overlay") {
    refuse(last, tail, "expected format/mkdir/overlay or format/bind last");
  }
  const lower = option(tail, "lowerdir");
  if (lower === undefined) refuse(last, tail, "no lowerdir option");
  let layers: string[];
  const range = OVERLAY_REF.exec(lower);
  const single = MOUNT_REF.exec(lower);
  if (range) {
    const [a, b] = [Number(range[1]), Number(range[2])];
    const idx = a <= b
      ? Array.from({ length: b - a + 1 }, (_, k) => a + k)
      : Array.from({ length: a - b + 1 }, (_, k) => a - k);
    layers = idx.map((n) => layerAt(mounts, last, n, "lowerdir", lower));
  } else if (single && !single[2]) {
    layers = [layerAt(mounts, last, Number(single[1]), "lowerdir", lower)];
  } else {
    refuse(
      last,
      tail,
      `lowerdir=${JSON.stringify(lower)}: expected {{ overlay A B }} or {{ mount N }}`,
    );
  }
  const upperdir = option(tail, "upperdir");
  const workdir = option(tail, "workdir");
  if (upperdir !== undefined || workdir !== undefined) {
    if (upperdir === undefined || workdir === undefined) {
      refuse(last, tail, "upperdir and workdir must come together");
    }
    if (image) {
      const path = imageRef(mounts, last, "upperdir", upperdir);
      imageRef(mounts, last, "workdir", workdir);
      const size = Number(option(image, "X-containerd.mkfs.size") ?? NaN);
      if (image.type === "ext4") {
        upper = { kind: "image", path };
      } else {
        if (!Number.isSafeInteger(size) || size <= 0) {
          refuse(
            0,
            image,
            `X-containerd.mkfs.size=${
              JSON.stringify(option(image, "X-containerd.mkfs.size"))
            }: expected a size in bytes`,
          );
        }
        upper = { kind: "image", path, sizeBytes: size };
      }
    } else {
      for (const [k, v] of [["upperdir", upperdir], ["workdir", workdir]]) {
        if (!v.startsWith("/")) {
          refuse(last, tail, `${k}=${JSON.stringify(v)}: expected an absolute path`);
        }
      }
      upper = { kind: "dir", upperdir, workdir };
    }
  } else if (image) {
    refuse(0, image, "a writable image but the overlay has no upperdir");
  }
  const overlayOptions = tail.options.filter((o) =>
    !/^(lowerdir|upperdir|workdir)=/.test(o) && !o.startsWith("X-containerd.")
  );
  return { layers, upper, overlayOptions };
}

/**
 * containerd 2.1's erofs snapshotter: the layer blobs behind an ordinary overlay mount (each
 * lowerdir `<dir>/fs` with `<dir>/layer.erofs` beside it). Undefined unless every lowerdir has one.
 */
export function erofsLayersBehindOverlay(
  m: RootfsMount,
  hasBlob: (path: string) => boolean,
): ErofsRootfs | undefined {
  if (m.type !== "overlay") return undefined;
  const lower = option(m, "lowerdir");
  const upperdir = option(m, "upperdir");
  const workdir = option(m, "workdir");
  if (!lower) return undefined;
  const layers: string[] = [];
  for (const dir of lower.split(":")) {
    if (!dir.startsWith("/") || !dir.endsWith("/fs")) return undefined;
    const blob = `${dir.slice(0, -"/fs".length)}/layer.erofs`;
    if (!hasBlob(blob)) return undefined;
    layers.push(blob);
  }
  const upper: ErofsUpper = upperdir !== undefined && workdir !== undefined
    ? { kind: "dir", upperdir, workdir }
    : { kind: "readonly" };
  const overlayOptions = m.options.filter((o) => !/^(lowerdir|upperdir|workdir)=/.test(o));
  return { layers, upper, overlayOptions };
}
