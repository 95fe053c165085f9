/**
 * A rootfs made of erofs layers (containerd's erofs snapshotter): each layer arrives as a
 * read-only block device (virtio-blk in a VM, a loop device in dev mode), is mounted read-only
 * under `<work>/layers/N`, and the layers are stacked with overlayfs under a writable upper in
 * init's work directory. Nothing of the image is copied or mounted on the host.
 */
import * as c from "./libc.ts";

/** The layer devices in overlay lowerdir order (uppermost first). */
export interface ErofsLayers {
  devices: string[];
}

function mkdirp(path: string): void {
  Deno.mkdirSync(path, { recursive: true, mode: 0o755 });
}

function waitForDevice(path: string, ms: number): void {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      Deno.lstatSync(path);
      return;
    } catch { /* not yet */ }
    if (Date.now() > deadline) throw new Error(`block device ${path} does not exist`);
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 20);
  }
}

/** The overlay mount data for `lowers` (uppermost first) under `upper`/`work`. */
export function overlayData(lowers: string[], upper: string, work: string): string {
  for (const p of [...lowers, upper, work]) {
    if (/[,:\\]/.test(p)) throw new Error(`overlay path ${JSON.stringify(p)} contains , : or \\`);
  }
  return `lowerdir=${lowers.join(":")},upperdir=${upper},workdir=${work}`;
}

/** Mounts every layer read-only and the overlay on `root`; throws naming the device that failed. */
export function mountErofsLayers(layers: ErofsLayers, workDir: string, root: string): void {
  if (layers.devices.length === 0) throw new Error("no erofs layer devices");
  const lowers: string[] = [];
  layers.devices.forEach((dev, i) => {
    const dir = `${workDir}/layers/${i}`;
    mkdirp(dir);
    waitForDevice(dev, 2000);
    try {
      c.mount(dev, dir, "erofs", c.MS.RDONLY, "");
    } catch (err) {
      throw new Error(`layer ${i}: erofs on ${dev}: ${err instanceof Error ? err.message : err}`);
    }
    lowers.push(dir);
  });
  const upper = `${workDir}/upper`, work = `${workDir}/work`;
  mkdirp(upper);
  mkdirp(work);
  mkdirp(root);
  c.mount("overlay", root, "overlay", 0, overlayData(lowers, upper, work));
}
