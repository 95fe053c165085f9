/**
 * The guest kernel for the QEMU backend: finds the installed Debian kernel and its modules,
 * extracts a PVH-bootable `vmlinux` from the LZ4 bzImage, and orders modules by `modules.dep`.
 */
import { exists } from "../fs.ts";

/** An installed kernel: compressed image and its module tree. */
export interface HostKernel {
  /** Kernel release, e.g. `6.1.0-56-cloud-amd64`. */
  release: string;
  /** The bzImage (`/boot/vmlinuz-<release>`). */
  bzImage: string;
  /** `/lib/modules/<release>`. */
  modulesDir: string;
}

/** Modules the guest needs on QEMU microvm (names as in modules.dep, `-` and `_` equivalent). */
export const GUEST_MODULES = [
  "virtio_mmio",
  "virtio_blk",
  "virtio_net",
  "virtio_console",
  "overlay",
  // virtio-fs shares (the container rootfs directory; brings fuse along).
  "virtiofs",
  // erofs layer devices (containerd's erofs snapshotter; brings libcrc32c along).
  "erofs",
  // Linux bridges inside the pod (`brctl addbr`, `ip link add type bridge`; brings stp, llc).
  // The guest has no modprobe for the kernel to load it on demand.
  "bridge",
];

/** LZ4 legacy frame magic (little-endian 0x184C2102) as found in Debian's x86 bzImage. */
const LZ4_LEGACY_MAGIC = [0x02, 0x21, 0x4c, 0x18];

function compareRelease(a: string, b: string): number {
  const pa = a.split(/[.-]/).map((x) => Number.parseInt(x, 10));
  const pb = b.split(/[.-]/).map((x) => Number.parseInt(x, 10));
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const x = Number.isNaN(pa[i]) ? -1 : pa[i] ?? -1;
    const y = Number.isNaN(pb[i]) ? -1 : pb[i] ?? -1;
    if (x !== y) return x - y;
  }
  return a.localeCompare(b);
}

/**
 * Finds the guest kernel: `NERDBOX_KERNEL_RELEASE` if set, else the newest `*-cloud-amd64` release
 * with both `/boot/vmlinuz-<release>` and `/lib/modules/<release>/modules.dep`, else the newest any.
 */
export async function findHostKernel(
  bootDir = "/boot",
  modulesRoot = "/lib/modules",
): Promise<HostKernel> {
  const wanted = Deno.env.get("NERDBOX_KERNEL_RELEASE");
  const releases: string[] = [];
  try {
    for await (const e of Deno.readDir(bootDir)) {
      if (e.name.startsWith("vmlinuz-")) releases.push(e.name.slice("vmlinuz-".length));
    }
  } catch (err) {
    throw new Error(`guest kernel: cannot read ${bootDir}: ${(err as Error).message}`);
  }
  const usable: string[] = [];
  for (const r of releases) {
    if (await exists(`${modulesRoot}/${r}/modules.dep`)) usable.push(r);
  }
  let release: string | undefined;
  if (wanted !== undefined) {
    if (!usable.includes(wanted)) {
      throw new Error(
        `NERDBOX_KERNEL_RELEASE=${JSON.stringify(wanted)}: expected a release with ` +
          `${bootDir}/vmlinuz-<release> and ${modulesRoot}/<release>/modules.dep; found: ` +
          (usable.join(", ") || "none"),
      );
    }
    release = wanted;
  } else {
    const cloud = usable.filter((r) => r.endsWith("-cloud-amd64")).sort(compareRelease);
    const any = [...usable].sort(compareRelease);
    release = cloud.at(-1) ?? any.at(-1);
  }
  if (release === undefined) {
    throw new Error(
      `guest kernel: no ${bootDir}/vmlinuz-<release> with ${modulesRoot}/<release>/modules.dep ` +
        `(install linux-image-cloud-amd64)`,
    );
  }
  return {
    release,
    bzImage: `${bootDir}/vmlinuz-${release}`,
    modulesDir: `${modulesRoot}/${release}`,
  };
}

/** Offset of the first LZ4 legacy frame in a bzImage, or -1. */
export function findLz4Payload(image: Uint8Array): number {
  outer: for (let i = 0; i + 4 <= image.length; i++) {
    for (let j = 0; j < 4; j++) if (image[i + j] !== LZ4_LEGACY_MAGIC[j]) continue outer;
    return i;
  }
  return -1;
}

/**
 * True when `elf` is a 64-bit ELF with a Xen PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY = 18),
 * which is what lets QEMU boot it directly with `-kernel`.
 */
export function hasPvhNote(elf: Uint8Array): boolean {
  if (elf.length < 64 || elf[0] !== 0x7f || elf[1] !== 0x45 || elf[2] !== 0x4c || elf[3] !== 0x46) {
    return false;
  }
  if (elf[4] !== 2 || elf[5] !== 1) return false; // ELFCLASS64, little-endian
  const v = new DataView(elf.buffer, elf.byteOffset, elf.byteLength);
  const phoff = Number(v.getBigUint64(0x20, true));
  const phentsize = v.getUint16(0x36, true);
  const phnum = v.getUint16(0x38, true);
  for (let i = 0; i < phnum; i++) {
    const ph = phoff + i * phentsize;
    if (ph + 56 > elf.length || v.getUint32(ph, true) !== 4) continue; // PT_NOTE
    const off = Number(v.getBigUint64(ph + 8, true));
    const size = Number(v.getBigUint64(ph + 32, true));
    let p = off;
    while (p + 12 <= off + size && p + 12 <= elf.length) {
      const namesz = v.getUint32(p, true);
      const descsz = v.getUint32(p + 4, true);
      const type = v.getUint32(p + 8, true);
      const name = new TextDecoder().decode(elf.subarray(p + 12, p + 12 + namesz)).replace(
        /\0+$/,
        "",
      );
      if (name === "Xen" && type === 18) return true;
      p += 12 + Math.ceil(namesz / 4) * 4 + Math.ceil(descsz / 4) * 4;
    }
  }
  return false;
}

/**
 * Extracts the uncompressed `vmlinux` from an LZ4-compressed bzImage into `out` with `lz4 -dc`
 * (its complaint about the bytes after the payload is expected and ignored), and checks the
 * result is a PVH-bootable ELF.
 */
export async function extractVmlinux(bzImage: string, out: string): Promise<void> {
  const image = await Deno.readFile(bzImage);
  const at = findLz4Payload(image);
  if (at < 0) {
    throw new Error(
      `guest kernel: ${bzImage} has no LZ4 payload (only LZ4-compressed kernels are supported)`,
    );
  }
  const file = await Deno.open(out, { write: true, create: true, truncate: true });
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command("lz4", {
      args: ["-dc"],
      stdin: "piped",
      stdout: "piped",
      stderr: "null",
    }).spawn();
  } catch (err) {
    file.close();
    throw new Error(
      `guest kernel: cannot run lz4 (apt-get install lz4): ${(err as Error).message}`,
    );
  }
  const writer = child.stdin.getWriter();
  const feeding = writer.write(image.subarray(at)).then(() => writer.close()).catch(() => {});
  await child.stdout.pipeTo(file.writable);
  await feeding;
  await child.status;
  const elf = await Deno.readFile(out);
  if (!hasPvhNote(elf)) {
    throw new Error(`guest kernel: ${bzImage} did not yield a PVH-bootable vmlinux`);
  }
}

/** modules.dep parsed: module path (relative to the modules dir) → its dependencies' paths. */
export type ModuleDeps = Map<string, string[]>;

/** Parses the text of `modules.dep`. */
export function parseModulesDep(text: string): ModuleDeps {
  const deps: ModuleDeps = new Map();
  for (const line of text.split("\n")) {
    const colon = line.indexOf(":");
    if (colon < 0) continue;
    const mod = line.slice(0, colon).trim();
    const rest = line.slice(colon + 1).trim();
    deps.set(mod, rest === "" ? [] : rest.split(/\s+/));
  }
  return deps;
}

/** `kernel/drivers/net/virtio_net.ko[.xz]` → `virtio_net`; `-` normalised to `_`. */
export function moduleName(path: string): string {
  const base = path.split("/").pop() ?? path;
  return base.replace(/\.ko(\.(xz|gz|zst))?$/, "").replaceAll("-", "_");
}

/**
 * Returns the paths of `names` and everything they depend on, in a valid load order
 * (dependencies first, each once). modules.dep lists a module's dependencies deepest-last, so a
 * depth-first walk that emits a module after its dependencies yields a correct order.
 */
export function moduleLoadOrder(deps: ModuleDeps, names: string[]): string[] {
  const byName = new Map<string, string>();
  for (const path of deps.keys()) byName.set(moduleName(path), path);
  const order: string[] = [];
  const done = new Set<string>();
  const visiting = new Set<string>();
  const visit = (path: string): void => {
    if (done.has(path)) return;
    if (visiting.has(path)) throw new Error(`modules.dep: dependency cycle at ${path}`);
    visiting.add(path);
    // Dependencies in reverse listed order: the last-listed is the most basic one.
    for (const d of [...(deps.get(path) ?? [])].reverse()) visit(d);
    visiting.delete(path);
    done.add(path);
    order.push(path);
  };
  for (const n of names) {
    const path = byName.get(n.replaceAll("-", "_"));
    if (path === undefined) throw new Error(`guest kernel: module ${JSON.stringify(n)} not found`);
    visit(path);
  }
  return order;
}

/** Module paths (absolute) for the guest, in load order. */
export async function guestModules(
  kernel: HostKernel,
  names: string[] = GUEST_MODULES,
): Promise<string[]> {
  const text = await Deno.readTextFile(`${kernel.modulesDir}/modules.dep`);
  return moduleLoadOrder(parseModulesDep(text), names).map((p) => `${kernel.modulesDir}/${p}`);
}

/** The host CPU clock in kHz from /proc/cpuinfo (`tsc_early_khz=` for microvm guests under TCG). */
export async function hostTscKhz(cpuinfo = "/proc/cpuinfo"): Promise<number> {
  const text = await Deno.readTextFile(cpuinfo);
  const m = text.match(/^cpu MHz\s*:\s*([0-9.]+)/m);
  if (!m) throw new Error(`${cpuinfo}: no "cpu MHz" line; cannot set tsc_early_khz`);
  const khz = Math.floor(Number(m[1]) * 1000);
  if (!Number.isFinite(khz) || khz <= 0) throw new Error(`${cpuinfo}: bad cpu MHz ${m[1]}`);
  return khz;
}
