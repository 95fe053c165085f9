/**
 * erofs layers from containerd's mounts to the VM, without booting: blobs checked with real
 * mkfs.erofs images (a missing file, a non-erofs file and too many layers are refused naming the
 * request field and the value), the QEMU drives read-only in order, the libkrun calls
 * (krun_add_disk2 read-only instead of the rootfs virtio-fs share), the guest device names, the
 * shim's Create taking the layers into the plan without a host mount and leaving nothing behind
 * when it refuses, and `-info` advertising the mount types. The mount lists are built the way
 * containerd 2.2's erofs snapshotter and mount manager build them (a stand-in: no containerd 2.2
 * package exists to produce them here).
 */
import { deepEqual, equal, match, ok, rejects } from "node:assert/strict";
import { create } from "@bufbuild/protobuf";
import {
  checkErofsLayers,
  erofsBlobProblem,
  layerDevice,
  layersGuestRootfs,
  maxLayers,
} from "../../lib/vm/erofs_layers.ts";
import { qemuArgv } from "../../lib/vm/qemu_argv.ts";
import { libkrunCalls } from "../../lib/vm/libkrun_calls.ts";
import type { VmPlan } from "../../lib/vm/types.ts";
import { SpecValidationError } from "../../lib/spec/types.ts";
import { findErofsLayers, takeRootfs } from "../../lib/shim/erofs_rootfs.ts";
import { isMounted, type RootfsMount, VM_MOUNT_TYPES } from "../../lib/shim/mounts.ts";
import { Code, TtrpcError } from "../../lib/shim/ttrpc.ts";
import * as pb from "../../lib/shim/proto/gen/containerd/shim_pb.ts";
import { ALLOW_MOUNTS_ANNOTATION, runtimeInfo } from "../../lib/shim/runtime_info.ts";
import { mkfsErofs } from "../helpers/erofs.ts";
import { writeBundle } from "../helpers/bundle.ts";
import { localTaskService } from "../helpers/task_service.ts";

/** A temp dir with two erofs blobs (top, base) and a file that is not erofs. */
async function fixture() {
  const dir = await Deno.makeTempDir({ prefix: "nbx-erofs-unit-" });
  for (const name of ["top", "base"]) {
    await Deno.mkdir(`${dir}/${name}/etc`, { recursive: true });
    await Deno.writeTextFile(`${dir}/${name}/etc/who`, `${name}\n`);
    await mkfsErofs(`${dir}/${name}`, `${dir}/${name}.erofs`);
  }
  await Deno.writeFile(`${dir}/not-erofs.img`, new Uint8Array(8192));
  return dir;
}

/** containerd 2.2's directory-mode list: layers (uppermost first) + format/mkdir/overlay. */
function mounts22(layers: string[], dir: string): RootfsMount[] {
  return [
    ...layers.map((source) => ({ type: "erofs", source, options: ["ro", "loop"] })),
    {
      type: "format/mkdir/overlay",
      source: "overlay",
      options: [
        `X-containerd.mkdir.path=${dir}/snap/fs:0755`,
        `workdir=${dir}/snap/work`,
        `upperdir=${dir}/snap/fs`,
        `lowerdir={{ overlay 0 ${layers.length - 1} }}`,
      ],
    },
  ];
}

const PLAN: VmPlan = {
  id: "e",
  backend: "qemu",
  cpus: 1,
  memoryMiB: 256,
  rootfs: "/nonexistent/rootfs",
  process: { args: ["/bin/true"], env: [], cwd: "/", uid: 0, gid: 0, terminal: false },
  hostname: "e",
  network: { kind: "tsi", ports: [] },
  stateDir: "/run/nerdbox/e",
};

function specErrors(e: unknown): string[] {
  ok(e instanceof SpecValidationError, String(e));
  return e.errors.map((x) => `${x.annotation}|${x.field}|${x.value}|${x.message}`);
}

Deno.test("erofs blobs: real images pass; missing, non-erofs and short files are named", async () => {
  const dir = await fixture();
  try {
    equal(await erofsBlobProblem(`${dir}/top.erofs`), undefined);
    equal(await erofsBlobProblem(`${dir}/gone.erofs`), "no such file");
    match((await erofsBlobProblem(`${dir}/not-erofs.img`))!, /not an erofs image \(magic 0x0+/);
    await Deno.writeFile(`${dir}/short`, new Uint8Array(100));
    match((await erofsBlobProblem(`${dir}/short`))!, /too short/);
    equal(await erofsBlobProblem(dir), "not a regular file");
    equal(await erofsBlobProblem("rel.erofs"), "expected an absolute path");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("erofs layers: device names and limits per backend", async () => {
  equal(layerDevice("qemu", 0), "/dev/vdb");
  equal(layerDevice("libkrun", 0), "/dev/vda");
  deepEqual(layersGuestRootfs("qemu", ["/a", "/b"]), {
    kind: "layers",
    devices: ["/dev/vdb", "/dev/vdc"],
  });
  // QEMU microvm: 24 virtio-mmio slots, minus runtime disk, channel and NICs.
  equal(maxLayers("qemu", 1), 21);
  equal(maxLayers("qemu", 0), 22);
  ok(maxLayers("libkrun", 0) <= 26);
  const dir = await fixture();
  try {
    const many = Array(22).fill(`${dir}/top.erofs`);
    const errs = await checkErofsLayers(PLAN, many, "X", (i) => `l${i}`).then(() => [], specErrors);
    deepEqual(errs.length, 1);
    match(errs[0], /^X\|\|22 layers\|at most 21 erofs layers fit the qemu VM/);
    await checkErofsLayers(PLAN, many.slice(1), "X", (i) => `l${i}`); // 21 fit
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("QEMU argv: layer drives read-only, in order, after the runtime disk, commas escaped", () => {
  const argv = qemuArgv({
    accel: "tcg",
    cpus: 1,
    memoryMiB: 256,
    kernel: "/k/vmlinux",
    initramfs: "/k/initramfs",
    runtimeDisk: "/k/runtime.ext4",
    layerDisks: ["/s/top.erofs", "/s/a,b.erofs"],
    consoleLog: "/s/console.log",
    nics: [],
  });
  const drives = argv.flatMap((a, i) => (a === "-drive" ? [argv[i + 1]] : []));
  deepEqual(drives.slice(1), [
    "file=/s/top.erofs,if=none,id=layer0,format=raw,readonly=on",
    "file=/s/a,,b.erofs,if=none,id=layer1,format=raw,readonly=on",
  ]);
  const devices = argv.flatMap((a, i) => (a === "-device" ? [argv[i + 1]] : []));
  deepEqual(devices.filter((d) => d.includes("drive=layer")), [
    "virtio-blk-device,drive=layer0,serial=nerdbox-layer-0",
    "virtio-blk-device,drive=layer1,serial=nerdbox-layer-1",
  ]);
  ok(!argv.some((a) => a.includes("memory-backend")), "no virtio-fs share for a layer rootfs");
});

Deno.test("libkrun calls: read-only raw disks for the layers instead of the rootfs share", () => {
  const calls = libkrunCalls({ ...PLAN, backend: "libkrun", layers: ["/s/top", "/s/base"] }, {
    ctx: 1,
    guest: { rootDir: "/g", path: "/init", args: [], env: [] },
    channelFd: 3,
    consoleLog: "/s/console.log",
    vnetHdr: false,
  });
  deepEqual(calls.filter((c) => c.call === "krun_add_disk2").map((c) => c.args), [
    [1, "layer0", "/s/top", 0, true],
    [1, "layer1", "/s/base", 0, true],
  ]);
  ok(!calls.some((c) => c.call === "krun_add_virtiofs"));
  // A volume share (host bind mounts) is one more virtio-fs device, tag "volumes".
  const withShare = libkrunCalls({ ...PLAN, backend: "libkrun", layers: ["/s/top"] }, {
    ctx: 1,
    guest: { rootDir: "/g", path: "/init", args: [], env: [] },
    channelFd: 3,
    consoleLog: "/s/console.log",
    volumesDir: "/s/volumes",
    vnetHdr: false,
  });
  deepEqual(withShare.filter((c) => c.call === "krun_add_virtiofs").map((c) => c.args), [
    [1, "volumes", "/s/volumes"],
  ]);
});

Deno.test("shim: 2.2 and 2.1 forms become plan layers with no host mount; bad ones named", async () => {
  const dir = await fixture();
  const target = `${dir}/bundle/rootfs`;
  await Deno.mkdir(target, { recursive: true });
  try {
    const layers = [`${dir}/top.erofs`, `${dir}/base.erofs`];
    const plan = structuredClone(PLAN);
    equal(await takeRootfs(plan, mounts22(layers, dir), target, false), false);
    deepEqual(plan.layers, layers);
    equal(await isMounted(target), false);
    // 2.2 block mode after the mount manager ran mkfs: a leading ext4 image (writes: guest tmpfs).
    const block = [
      { type: "ext4", source: `${dir}/rwlayer.img`, options: ["rw", "loop"] },
      ...layers.map((source) => ({ type: "erofs", source, options: ["ro", "loop"] })),
      {
        type: "format/mkdir/overlay",
        source: "overlay",
        options: [
          "workdir={{ mount 0 }}/work",
          "upperdir={{ mount 0 }}/upper",
          "lowerdir={{ overlay 1 2 }}",
        ],
      },
    ];
    deepEqual(findErofsLayers(block)?.rootfs.layers, layers);
    deepEqual(findErofsLayers(block)?.fields, ["[1].source", "[2].source"]);
    // 2.1: an overlay whose lowerdirs <id>/fs have <id>/layer.erofs beside them.
    for (const [i, l] of layers.entries()) {
      await Deno.mkdir(`${dir}/s${i}/fs`, { recursive: true });
      await Deno.copyFile(l, `${dir}/s${i}/layer.erofs`);
    }
    const ov = [{
      type: "overlay",
      source: "overlay",
      options: [`lowerdir=${dir}/s0/fs:${dir}/s1/fs`, `upperdir=${dir}/u`, `workdir=${dir}/w`],
    }];
    const plan21 = structuredClone(PLAN);
    equal(await takeRootfs(plan21, ov, target, false), false);
    deepEqual(plan21.layers, [`${dir}/s0/layer.erofs`, `${dir}/s1/layer.erofs`]);

    const bad = [`${dir}/top.erofs`, `${dir}/gone.erofs`, `${dir}/not-erofs.img`];
    const errs = await takeRootfs(structuredClone(PLAN), mounts22(bad, dir), target, false)
      .then(() => [], specErrors);
    deepEqual(errs.map((e) => e.split("|").slice(0, 3).join("|")), [
      `CreateTaskRequest.rootfs|[1].source|${dir}/gone.erofs`,
      `CreateTaskRequest.rootfs|[2].source|${dir}/not-erofs.img`,
    ]);
    match(errs[0], /erofs layer 1: no such file$/);
    match(errs[1], /erofs layer 2: not an erofs image/);
    const pod = await takeRootfs(structuredClone(PLAN), mounts22(layers, dir), target, true)
      .then(() => [], specErrors);
    match(pod[0], /joining a pod VM needs a rootfs the host can mount/);
    const malformed = mounts22(layers, dir);
    malformed[2].options = ["lowerdir={{ overlay 0 5 }}"];
    match(
      (await takeRootfs(structuredClone(PLAN), malformed, target, false)
        .then(() => [], specErrors))[0],
      /rootfs mount 2 .*lowerdir=.*mount 2 is not an erofs layer/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("shim Create: a missing layer is INVALID_ARGUMENT naming the field; nothing left", async () => {
  const dir = await fixture();
  const bundle = `${dir}/bundle`;
  await writeBundle(bundle, { args: ["/bin/true"], env: [] });
  const svc = localTaskService("t", `${dir}/run`);
  try {
    const req = create(pb.CreateTaskRequestSchema, {
      id: "erofs-bad",
      bundle,
      rootfs: mounts22([`${dir}/top.erofs`, `${dir}/gone.erofs`], dir),
      stdout: `file://${dir}/out`,
      stderr: `file://${dir}/err`,
    });
    await rejects(svc.create(req), (e: unknown) => {
      ok(e instanceof TtrpcError);
      equal(e.code, Code.INVALID_ARGUMENT);
      match(
        e.message,
        /^CreateTaskRequest\.rootfs: \[1\]\.source=".*gone\.erofs": erofs layer 1: no such file$/,
      );
      return true;
    });
    equal(svc.containers.size, 0);
    equal(await isMounted(`${bundle}/rootfs`), false);
    const left = await Array.fromAsync(Deno.readDir(`${dir}/run`)).catch(() => []);
    deepEqual(left.map((e) => e.name), []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("-info advertises the mount types the shim takes into the VM", () => {
  deepEqual(VM_MOUNT_TYPES, ["mkdir/*", "format/*", "erofs", "ext4"]);
  equal(runtimeInfo().annotations[ALLOW_MOUNTS_ANNOTATION], "mkdir/*,format/*,erofs,ext4");
});
