/**
 * The erofs rootfs forms as containerd builds them: 2.2's mount-manager lists (directory upper,
 * block-mode mkfs/ext4 upper, single-layer views) and 2.1's overlay with layer.erofs blobs beside
 * the lowerdirs; everything else is not the erofs form, and malformed lists are refused by name.
 */
import { deepEqual, equal, match, throws } from "node:assert/strict";
import {
  erofsLayersBehindOverlay,
  ErofsMountError,
  parseErofsMounts,
  type RootfsMount,
} from "../../lib/spec/erofs_mounts.ts";

const S = "/var/lib/containerd/io.containerd.snapshotter.v1.erofs/snapshots";
const layer = (id: number): RootfsMount => ({
  type: "erofs",
  source: `${S}/${id}/layer.erofs`,
  options: ["ro", "loop"],
});

Deno.test("2.2 directory mode: layers in lowerdir order, host upper/work dirs", () => {
  // An active snapshot over parents 3 (nearest), 2, 1, as the snapshotter lists them.
  const mounts = [layer(3), layer(2), layer(1), {
    type: "format/mkdir/overlay",
    source: "overlay",
    options: [
      `workdir=${S}/9/work`,
      `upperdir=${S}/9/fs`,
      "lowerdir={{ overlay 0 2 }}",
      "index=off",
    ],
  }];
  deepEqual(parseErofsMounts(mounts), {
    layers: [`${S}/3/layer.erofs`, `${S}/2/layer.erofs`, `${S}/1/layer.erofs`],
    upper: { kind: "dir", upperdir: `${S}/9/fs`, workdir: `${S}/9/work` },
    overlayOptions: ["index=off"],
  });
});

Deno.test("2.2 block mode: the mkfs/ext4 image is the writable upper", () => {
  const mounts = [
    {
      type: "mkfs/ext4",
      source: `${S}/9/rwlayer.img`,
      options: ["X-containerd.mkfs.fs=ext4", "X-containerd.mkfs.size=67108864", "rw", "loop"],
    },
    layer(2),
    layer(1),
    {
      type: "format/mkdir/overlay",
      source: "overlay",
      options: [
        "X-containerd.mkdir.path={{ mount 0 }}/upper:0755",
        "X-containerd.mkdir.path={{ mount 0 }}/work:0755",
        "workdir={{ mount 0 }}/work",
        "upperdir={{ mount 0 }}/upper",
        "lowerdir={{ overlay 1 2 }}",
      ],
    },
  ];
  deepEqual(parseErofsMounts(mounts), {
    layers: [`${S}/2/layer.erofs`, `${S}/1/layer.erofs`],
    upper: { kind: "image", path: `${S}/9/rwlayer.img`, sizeBytes: 67108864 },
    overlayOptions: [],
  });
});

Deno.test("2.2 views: one erofs mount, or format/bind of one, are read-only", () => {
  deepEqual(parseErofsMounts([layer(1)])?.upper, { kind: "readonly" });
  const bind = parseErofsMounts([layer(4), {
    type: "format/bind",
    source: "{{ mount 0 }}",
    options: ["ro", "rbind"],
  }]);
  deepEqual(bind, {
    layers: [`${S}/4/layer.erofs`],
    upper: { kind: "readonly" },
    overlayOptions: [],
  });
  // one writable layer: lowerdir={{ mount 0 }}
  const one = parseErofsMounts([layer(4), {
    type: "format/mkdir/overlay",
    source: "overlay",
    options: [`workdir=${S}/9/work`, `upperdir=${S}/9/fs`, "lowerdir={{ mount 0 }}"],
  }]);
  deepEqual(one?.layers, [`${S}/4/layer.erofs`]);
});

Deno.test("not the erofs form: undefined (the directory path stays)", () => {
  equal(parseErofsMounts([]), undefined);
  equal(
    parseErofsMounts([{ type: "overlay", source: "overlay", options: ["lowerdir=/a:/b"] }]),
    undefined,
  );
  equal(parseErofsMounts([{ type: "bind", source: "/x", options: ["rbind", "rw"] }]), undefined);
});

Deno.test("malformed erofs lists are refused, naming mount, field and value", () => {
  const overlay = (lower: string): RootfsMount => ({
    type: "format/mkdir/overlay",
    source: "overlay",
    options: [`workdir=/w`, `upperdir=/u`, `lowerdir=${lower}`],
  });
  throws(() => parseErofsMounts([layer(1), overlay("{{ overlay 0 3 }}")]), (e: Error) => {
    equal(e instanceof ErofsMountError, true);
    match(
      e.message,
      /rootfs mount 1 .*lowerdir="\{\{ overlay 0 3 \}\}": mount 1 is not an erofs layer/,
    );
    return true;
  });
  throws(
    () => parseErofsMounts([layer(1), overlay("/host/dir")]),
    /expected \{\{ overlay A B \}\}/,
  );
  throws(
    () =>
      parseErofsMounts([
        { ...layer(1), options: ["ro", "loop", "device=/x"] },
        overlay("{{ mount 0 }}"),
      ]),
    /device=…: merged fsmeta/,
  );
  throws(
    () =>
      parseErofsMounts([
        layer(1),
        { type: "bind", source: "/x", options: [] },
        overlay("{{ mount 0 }}"),
      ]),
    /rootfs mount 1 \(type "bind"\): expected erofs layer mounts/,
  );
});

Deno.test("2.1 --snapshotter erofs: blobs found beside the overlay's lowerdirs", () => {
  const have = new Set([`${S}/2/layer.erofs`, `${S}/1/layer.erofs`]);
  const m: RootfsMount = {
    type: "overlay",
    source: "overlay",
    options: [
      "index=off",
      `workdir=${S}/9/work`,
      `upperdir=${S}/9/fs`,
      `lowerdir=${S}/2/fs:${S}/1/fs`,
    ],
  };
  deepEqual(erofsLayersBehindOverlay(m, (p) => have.has(p)), {
    layers: [`${S}/2/layer.erofs`, `${S}/1/layer.erofs`],
    upper: { kind: "dir", upperdir: `${S}/9/fs`, workdir: `${S}/9/work` },
    overlayOptions: ["index=off"],
  });
  // an overlayfs snapshotter's lowerdirs have no blob: not the erofs form
  equal(erofsLayersBehindOverlay(m, () => false), undefined);
});
