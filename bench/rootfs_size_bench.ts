/**
 * Rootfs-size scaling, side by side in one run (interleaved rounds, same load): wall time of
 * `nerdbox run --backend qemu --accel tcg <rootfs> -- /bin/true` for a 1.1 GiB directory rootfs
 * against a ≈2 MiB busybox one. The rootfs is shared with virtio-fs (docs/qemu.md), so the ratio
 * should stay near 1; one round of each with `NERDBOX_QEMU_ROOTFS=ext4` (the per-run copy, what
 * every run did before) shows what the sharing saves. `deno task bench` runs it as one bench
 * case; or directly: `bin/deno run -A bench/rootfs_size_bench.ts [rounds]`.
 */
import { makeBusyboxRootfs } from "../lib/vm/busybox_rootfs.ts";
import { reportEntry } from "./report_entry.ts";
import { addIncompressibleFiles, median } from "./bench_util.ts";

const ROOT = new URL("../", import.meta.url).pathname;
const NERDBOX = `${ROOT}bin/nerdbox`;
const GIB = 1024 ** 3;

/** A busybox rootfs grown to `bytes` with incompressible files (a few large, many small). */
async function bigRootfs(bytes: number): Promise<string> {
  const dir = await makeBusyboxRootfs();
  await addIncompressibleFiles(dir, bytes);
  return dir;
}

async function duBytes(dir: string): Promise<number> {
  const out = await new Deno.Command("du", { args: ["-sb", dir], stdout: "piped" }).output();
  return Number(new TextDecoder().decode(out.stdout).split("\t")[0]);
}

async function runTrue(rootfs: string, env: Record<string, string> = {}): Promise<number> {
  const t = performance.now();
  const out = await new Deno.Command(NERDBOX, {
    args: ["run", "--backend", "qemu", "--accel", "tcg", rootfs, "--", "/bin/true"],
    env,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const ms = performance.now() - t;
  if (!out.success) {
    throw new Error(`nerdbox run failed (${out.code}): ${new TextDecoder().decode(out.stderr)}`);
  }
  return ms;
}

/** Runs the interleaved rounds and returns the report text. */
export async function rootfsSizeBench(rounds = 3): Promise<string> {
  const small = await makeBusyboxRootfs();
  const big = await bigRootfs(1.1 * GIB);
  try {
    const [sb, bb] = [await duBytes(small), await duBytes(big)];
    await runTrue(small); // warm the guest image cache
    const s: number[] = [];
    const b: number[] = [];
    for (let i = 0; i < rounds; i++) {
      s.push(await runTrue(small));
      b.push(await runTrue(big));
    }
    const ext4 = { NERDBOX_QEMU_ROOTFS: "ext4" };
    const se = await runTrue(small, ext4);
    const be = await runTrue(big, ext4);
    const f = (ms: number) => `${(ms / 1000).toFixed(2)} s`;
    const mb = (n: number) => `${(n / 1024 ** 2).toFixed(1)} MiB`;
    const [ms, mbig] = [median(s), median(b)];
    return [
      `rootfs size benchmark (nerdbox run --backend qemu --accel tcg … /bin/true, ${rounds} ` +
      `interleaved rounds, medians; load ${
        (await Deno.readTextFile("/proc/loadavg")).split(" ")[0]
      })`,
      `  small rootfs (${mb(sb)}), virtio-fs:   ${f(ms)}`,
      `  big rootfs (${mb(bb)}), virtio-fs:  ${f(mbig)}   ratio ${(mbig / ms).toFixed(2)}× ` +
      `(issue 14 baseline +8–12 s, goal ≤ 1.15×)`,
      `  per-run ext4 copy (NERDBOX_QEMU_ROOTFS=ext4, 1 round): small ${f(se)}, big ${f(be)}` +
      `   ratio ${(be / se).toFixed(2)}× (+${f(be - se)}: the copy sharing removes)`,
    ].join("\n");
  } finally {
    await Deno.remove(small, { recursive: true }).catch(() => {});
    await Deno.remove(big, { recursive: true }).catch(() => {});
  }
}

await reportEntry(import.meta, "rootfs size", "ROOTFS_BENCH_ROUNDS", rootfsSizeBench);
