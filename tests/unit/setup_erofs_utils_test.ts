/**
 * The private erofs-utils (scripts/setup_erofs_utils.ts): its version string is read right, and the
 * installed mkfs.erofs is ≥ 1.7 and turns a tar stream into an erofs image the way containerd's
 * erofs differ asks (`--tar=f --aufs`, whiteouts as overlayfs char devices).
 */
import { equal, ok } from "node:assert/strict";
import {
  EROFS_UTILS_DIR,
  EROFS_UTILS_MIN,
  parseMkfsVersion,
} from "../../scripts/setup_erofs_utils.ts";
import { versionAtLeast } from "../../scripts/setup_containerd.ts";

const dec = new TextDecoder();

Deno.test("mkfs.erofs version from --version", () => {
  equal(parseMkfsVersion("mkfs.erofs (erofs-utils) 1.8.6\navailable compressors: lz4\n"), "1.8.6");
  equal(parseMkfsVersion("mkfs.erofs 1.5\n"), "");
  equal(parseMkfsVersion("usage: [options] FILE DIRECTORY"), "");
  ok(versionAtLeast("1.8.6", EROFS_UTILS_MIN));
  ok(!versionAtLeast("1.5", EROFS_UTILS_MIN));
});

Deno.test("the private mkfs.erofs is ≥ 1.7 and converts a tar stream with --tar=f --aufs", async () => {
  const bin = `${EROFS_UTILS_DIR}/bin/mkfs.erofs`;
  const v = await new Deno.Command(bin, { args: ["--version"] }).output();
  equal(v.code, 0, `${bin} (deno task setup builds it): ${dec.decode(v.stderr)}`);
  ok(versionAtLeast(parseMkfsVersion(dec.decode(v.stdout)) || "0", EROFS_UTILS_MIN));

  const dir = await Deno.makeTempDir({ prefix: "nbx-mkfs-erofs-" });
  try {
    await Deno.mkdir(`${dir}/t/etc`, { recursive: true });
    await Deno.writeTextFile(`${dir}/t/etc/hello`, "hello\n");
    await Deno.writeTextFile(`${dir}/t/etc/.wh.gone`, ""); // an OCI whiteout
    const tar = await new Deno.Command("tar", { args: ["-C", `${dir}/t`, "-cf", "-", "."] })
      .output();
    equal(tar.code, 0);
    const mk = new Deno.Command(bin, {
      args: ["--tar=f", "--aufs", "--quiet", "-Enoinline_data", `${dir}/l.erofs`],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const w = mk.stdin.getWriter();
    await w.write(tar.stdout);
    await w.close();
    const res = await mk.output();
    equal(res.code, 0, dec.decode(res.stderr));
    const img = await Deno.readFile(`${dir}/l.erofs`);
    equal(new DataView(img.buffer).getUint32(1024, true), 0xe0f5e1e2, "erofs superblock magic");
    // fsck.erofs from the same build extracts it: the whiteout became a 0:0 char device
    const fsck = await new Deno.Command(`${EROFS_UTILS_DIR}/bin/fsck.erofs`, {
      args: [`--extract=${dir}/x`, `${dir}/l.erofs`],
    }).output();
    equal(fsck.code, 0, dec.decode(fsck.stderr));
    equal(await Deno.readTextFile(`${dir}/x/etc/hello`), "hello\n");
    const gone = await Deno.lstat(`${dir}/x/etc/gone`);
    ok(gone.isCharDevice, "whiteout as a char device");
    equal(gone.rdev, 0);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
