/**
 * erofs layers vs a shared directory, side by side in one run (interleaved rounds, same load): the
 * shim's Create → Start → exit of `/bin/true` under QEMU (accel auto), driven through the real Task service
 * (as containerd would), for a ≈2 MiB busybox rootfs shared with virtio-fs (the anchor), the same
 * rootfs as two erofs layers, and a 1.1 GiB rootfs as two erofs layers (read-only virtio-blk,
 * lib/vm/erofs_layers.ts). The erofs mount lists are the ones containerd 2.2 would send (a
 * stand-in: no containerd 2.2 here). `deno task bench` runs it as one bench case; or directly:
 * `bin/deno run -A bench/erofs_bench.ts [rounds]`.
 */
import { create } from "@bufbuild/protobuf";
import { makeBusyboxRootfs } from "../lib/vm/busybox_rootfs.ts";
import * as pb from "../lib/shim/proto/gen/containerd/shim_pb.ts";
import { reportEntry } from "./report_entry.ts";
import { mkfsErofs } from "../tests/helpers/erofs.ts";
import { writeBundle } from "../tests/helpers/bundle.ts";
import { addIncompressibleFiles, median } from "./bench_util.ts";
import { localTaskService, taskServiceDir } from "../tests/helpers/task_service.ts";

const GIB = 1024 ** 3;

/** containerd 2.2's directory-mode list for `layers` (uppermost first). */
function erofsMounts(layers: string[], snap: string) {
  return [
    ...layers.map((source) => ({ type: "erofs", source, options: ["ro", "loop"] })),
    {
      type: "format/mkdir/overlay",
      source: "overlay",
      options: [
        `workdir=${snap}/work`,
        `upperdir=${snap}/fs`,
        `lowerdir={{ overlay 0 ${layers.length - 1} }}`,
      ],
    },
  ];
}

/** Runs the interleaved rounds and returns the report text. */
export async function erofsBench(rounds = 3): Promise<string> {
  const dir = await taskServiceDir("nbx-erofs-bench-");
  const svc = localTaskService("erofs-bench", `${dir}/run`, true);
  let seq = 0;
  const startTrue = async (mounts: ReturnType<typeof erofsMounts>, rootfsDir?: string) => {
    const id = `b${++seq}`;
    const bundle = `${dir}/bundles/${id}`;
    await writeBundle(bundle, { args: ["/bin/true"], env: ["PATH=/bin"], root: rootfsDir });
    const t = performance.now();
    await svc.create(create(pb.CreateTaskRequestSchema, { id, bundle, rootfs: mounts }));
    await svc.start(create(pb.StartRequestSchema, { id }));
    const c = svc.containers.get(id)!;
    await c.init.exited;
    const ms = performance.now() - t;
    const code = c.init.exitStatus;
    await svc.delete(create(pb.DeleteRequestSchema, { id }));
    if (code !== 0) throw new Error(`${id}: /bin/true exited ${code}`);
    return ms;
  };
  try {
    const small = await makeBusyboxRootfs(`${dir}/small`);
    const top = `${dir}/top`;
    await Deno.mkdir(`${top}/etc`, { recursive: true });
    await Deno.writeTextFile(`${top}/etc/hostname`, "top\n");
    await addIncompressibleFiles(`${dir}/bulk`, 1.1 * GIB);
    await mkfsErofs(small, `${dir}/small.erofs`);
    await mkfsErofs(top, `${dir}/top.erofs`);
    // The big image: busybox base + 1.1 GiB on top of it, two layers.
    await mkfsErofs(`${dir}/bulk`, `${dir}/bulk.erofs`);
    await Deno.remove(`${dir}/bulk`, { recursive: true });
    const snap = `${dir}/snap`;
    await Deno.mkdir(`${snap}/fs`, { recursive: true });
    await Deno.mkdir(`${snap}/work`, { recursive: true });
    const smallLayers = erofsMounts([`${dir}/top.erofs`, `${dir}/small.erofs`], snap);
    const bigLayers = erofsMounts([`${dir}/bulk.erofs`, `${dir}/small.erofs`], snap);
    const sizes = {
      small: (await Deno.stat(`${dir}/small.erofs`)).size,
      big: (await Deno.stat(`${dir}/bulk.erofs`)).size +
        (await Deno.stat(`${dir}/small.erofs`)).size,
    };
    await startTrue([], small); // warm the guest image cache
    const share: number[] = [], es: number[] = [], eb: number[] = [];
    for (let i = 0; i < rounds; i++) {
      share.push(await startTrue([], small));
      es.push(await startTrue(smallLayers));
      eb.push(await startTrue(bigLayers));
    }
    const f = (ms: number) => `${(ms / 1000).toFixed(2)} s`;
    const mb = (n: number) => `${(n / 1024 ** 2).toFixed(1)} MiB`;
    const [a, s, b] = [median(share), median(es), median(eb)];
    return [
      `erofs benchmark (shim Create→Start→exit of /bin/true, QEMU (accel auto), ${rounds} interleaved ` +
      `rounds, medians; load ${(await Deno.readTextFile("/proc/loadavg")).split(" ")[0]})`,
      `  busybox directory, virtio-fs (anchor):       ${f(a)}`,
      `  busybox as 2 erofs layers (${mb(sizes.small)}):     ${f(s)}   ratio ${
        (s / a).toFixed(2)
      }×`,
      `  1.1 GiB image as 2 erofs layers (${mb(sizes.big)}): ${f(b)}   ratio ${
        (b / a).toFixed(2)
      }× ` +
      `(vs small erofs ${(b / s).toFixed(2)}×)`,
    ].join("\n");
  } finally {
    for (const c of svc.containers.values()) await c.dispose().catch(() => {});
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

await reportEntry(import.meta, "erofs", "EROFS_BENCH_ROUNDS", erofsBench);
