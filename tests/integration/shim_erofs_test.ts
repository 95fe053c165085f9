/**
 * containerd 2.x's erofs rootfs through the shim into a real QEMU guest: two layers built with the
 * real mkfs.erofs from a busybox rootfs, handed to the shim's Task service as the mount list
 * containerd 2.2's erofs snapshotter + mount manager produce (`erofs` layer mounts and a
 * `format/mkdir/overlay` over `{{ overlay 0 1 }}`). That list is a named stand-in for containerd
 * 2.2 (no 2.2 package exists; containerd 2.1's real erofs snapshotter runs in
 * tests/integration/shim_versions_test.ts). The layers reach the guest as read-only virtio-blk
 * devices (QEMU `-drive …,readonly=on`); the guest mounts them as erofs and stacks them under a
 * tmpfs upper. Proven: files of both layers visible, the upper layer wins (and its whiteout hides
 * a base file), writes land in the guest's tmpfs (the images and the snapshot's host upperdir are
 * unchanged), nothing of the image is mounted on the host, and Delete leaves nothing.
 */
import { deepEqual, equal, match, ok } from "node:assert/strict";
import { create } from "@bufbuild/protobuf";
import { makeBusyboxRootfs } from "../helpers/rootfs.ts";
import { isMounted } from "../../lib/shim/mounts.ts";
import * as pb from "../../lib/shim/proto/gen/containerd/shim_pb.ts";
import { mkfsErofs, sha256File } from "../helpers/erofs.ts";
import { writeBundle } from "../helpers/bundle.ts";
import { localTaskService, taskServiceDir } from "../helpers/task_service.ts";

async function run(cmd: string, args: string[]): Promise<void> {
  const o = await new Deno.Command(cmd, { args, stdout: "null", stderr: "piped" }).output();
  ok(o.success, `${cmd} ${args.join(" ")}: ${new TextDecoder().decode(o.stderr)}`);
}

const SCRIPT = [
  "cat /etc/who /etc/only-base /top-only",
  "[ -e /etc/gone ] && echo gone-visible || echo gone-hidden",
  "echo new > /etc/written; echo changed > /etc/who; cat /etc/written /etc/who",
  // The root: an overlay whose lowers are the two erofs mounts (outside the chroot, so only the
  // overlay's options show them) and whose upper is in init's tmpfs.
  "grep '^overlay / overlay ' /proc/mounts | tr ',' '\\n' | grep -E '^(lowerdir|upperdir)='",
].join("; ");

Deno.test("shim + QEMU: containerd 2.2 erofs layers as read-only block devices, tmpfs upper", async () => {
  const dir = await taskServiceDir("nbx-shim-erofs-");
  const bundle = `${dir}/bundle`;
  const svc = localTaskService("erofs-test", `${dir}/run`, true);
  const id = "erofs-two-layers";
  try {
    // Base layer: a busybox rootfs; top layer: an override, a new file and a whiteout.
    const base = await makeBusyboxRootfs(`${dir}/base`);
    await Deno.writeTextFile(`${base}/etc/who`, "base\n");
    await Deno.writeTextFile(`${base}/etc/only-base`, "from-base\n");
    await Deno.writeTextFile(`${base}/etc/gone`, "should be hidden\n");
    const top = `${dir}/top`;
    await Deno.mkdir(`${top}/etc`, { recursive: true });
    await Deno.writeTextFile(`${top}/etc/who`, "top\n");
    await Deno.writeTextFile(`${top}/top-only`, "from-top\n");
    await run("mknod", [`${top}/etc/gone`, "c", "0", "0"]); // overlayfs whiteout
    const layers = [`${dir}/top.erofs`, `${dir}/base.erofs`];
    await mkfsErofs(top, layers[0]);
    await mkfsErofs(base, layers[1]);
    const before = await Promise.all(layers.map(sha256File));
    const snap = `${dir}/snapshots/9`;
    await Deno.mkdir(`${snap}/fs`, { recursive: true });
    await Deno.mkdir(`${snap}/work`, { recursive: true });

    await writeBundle(bundle, { args: ["sh", "-c", SCRIPT], hostname: "erofs-box" });
    // The stand-in for containerd 2.2 (erofs snapshotter, directory mode, mount manager told
    // `mkdir/*,format/*,erofs` by -info): what CreateTaskRequest.rootfs carries.
    const rootfs = [
      ...layers.map((source) => ({ type: "erofs", source, options: ["ro", "loop"] })),
      {
        type: "format/mkdir/overlay",
        source: "overlay",
        options: [
          `X-containerd.mkdir.path=${snap}/fs:0755`,
          `workdir=${snap}/work`,
          `upperdir=${snap}/fs`,
          "lowerdir={{ overlay 0 1 }}",
        ],
      },
    ];
    await svc.create(create(pb.CreateTaskRequestSchema, {
      id,
      bundle,
      rootfs,
      stdout: `file://${dir}/stdout`,
      stderr: `file://${dir}/stderr`,
    }));
    const c = svc.containers.get(id)!;
    deepEqual(c.plan.layers, layers);
    equal(await isMounted(`${bundle}/rootfs`), false, "nothing mounted on the host rootfs");

    await svc.start(create(pb.StartRequestSchema, { id }));
    // While it runs: QEMU has the blobs as read-only drives; the host mounts none of them.
    const argv = (await Deno.readTextFile(`/proc/${c.vm!.pid}/cmdline`)).split("\0");
    for (const [i, l] of layers.entries()) {
      ok(
        argv.includes(`file=${l},if=none,id=layer${i},format=raw,readonly=on`),
        `QEMU argv has layer ${i} read-only: ${argv.join(" ")}`,
      );
    }
    const mountinfo = await Deno.readTextFile("/proc/self/mountinfo");
    ok(!mountinfo.includes(" erofs "), "no erofs mount on the host");
    ok(!mountinfo.includes(dir), "nothing of the test's files is mounted on the host");
    await c.init.exited;
    const out = await Deno.readTextFile(`${dir}/stdout`);
    const err = await Deno.readTextFile(`${dir}/stderr`);
    equal(c.init.exitStatus, 0, `stdout:\n${out}\nstderr:\n${err}`);
    const lines = out.trim().split("\n");
    deepEqual(lines.slice(0, 6), [
      "top",
      "from-base",
      "from-top",
      "gone-hidden",
      "new",
      "changed",
    ], out);
    // The root stacks both layers in order (layers/0 = /dev/vdb = top) under the tmpfs upper.
    deepEqual(lines.slice(6), [
      "lowerdir=/run/nerdbox/layers/0:/run/nerdbox/layers/1",
      "upperdir=/run/nerdbox/upper",
    ], out);

    await svc.delete(create(pb.DeleteRequestSchema, { id }));
    deepEqual(await Promise.all(layers.map(sha256File)), before, "the layer images are unchanged");
    deepEqual(
      await Array.fromAsync(Deno.readDir(`${snap}/fs`)),
      [],
      "writes went to the guest's tmpfs, not the host upperdir",
    );
    equal(svc.containers.size, 0);
    match(await Deno.readTextFile(`${base}/etc/who`), /^base/);
    deepEqual(await Array.fromAsync(Deno.readDir(`${dir}/run`)).catch(() => []), []);
  } finally {
    const c = svc.containers.get(id);
    await c?.dispose().catch(() => {});
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});
