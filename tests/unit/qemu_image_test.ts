/**
 * Guest image parts against their real consumers: the cpio archive read back by GNU cpio, module
 * order from the installed kernel's modules.dep, the vmlinux extracted from the installed bzImage,
 * the ext4 image read back by debugfs, and the content-hash cache.
 */
import { deepEqual, equal, match, ok, rejects, throws } from "node:assert/strict";
import { encodeCpio } from "../../lib/vm/initramfs.ts";
import {
  extractVmlinux,
  findHostKernel,
  findLz4Payload,
  GUEST_MODULES,
  guestModules,
  hasPvhNote,
  moduleLoadOrder,
  moduleName,
  parseModulesDep,
} from "../../lib/vm/kernel.ts";
import { ensureGuestImage, GUEST_SHARED_SOURCES, stage1Script } from "../../lib/vm/guest_image.ts";
import { makeExt4Image } from "../../lib/vm/rootfs_image.ts";
import { makeBusyboxRootfs } from "../helpers/rootfs.ts";
import { runCommandText } from "../helpers/procs.ts";

function run(cmd: string, args: string[], cwd?: string, stdin?: Uint8Array) {
  return runCommandText(cmd, args, { cwd, stdin });
}

Deno.test("cpio newc archive is read back by GNU cpio with names, modes, links and data", async () => {
  const dir = await Deno.makeTempDir({ prefix: "nbxq-cpio-" });
  try {
    const odd = new Uint8Array([0, 1, 2, 3, 4]); // size not a multiple of 4: exercises padding
    const archive = encodeCpio([
      { kind: "dir", path: "bin" },
      { kind: "file", path: "bin/tool", mode: 0o755, data: new TextEncoder().encode("#!x\n") },
      { kind: "file", path: "odd name,with=comma", data: odd },
      { kind: "symlink", path: "bin/sh", target: "/bin/tool" },
      { kind: "dir", path: "dev" },
      { kind: "chardev", path: "dev/console", major: 5, minor: 1 },
    ]);
    const list = await run("cpio", ["-itv", "--quiet"], undefined, archive);
    equal(list.code, 0, list.stderr);
    match(list.stdout, /^-rwxr-xr-x .* bin\/tool$/m);
    match(list.stdout, /^lrwxrwxrwx .* bin\/sh -> \/bin\/tool$/m);
    match(list.stdout, /^crw------- .* 5,\s+1 .* dev\/console$/m);
    const x = await run("cpio", ["-id", "--quiet", "--no-absolute-filenames"], dir, archive);
    equal(x.code, 0, x.stderr);
    deepEqual(await Deno.readFile(`${dir}/odd name,with=comma`), odd);
    equal(await Deno.readTextFile(`${dir}/bin/tool`), "#!x\n");
    equal(await Deno.readLink(`${dir}/bin/sh`), "/bin/tool");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("cpio refuses absolute, dot-dot and duplicate paths", () => {
  const data = new Uint8Array(0);
  for (const path of ["/etc/x", "a/../b", "a//b", ""]) {
    let threw = false;
    try {
      encodeCpio([{ kind: "file", path, data }]);
    } catch (e) {
      threw = true;
      match((e as Error).message, /must be relative/);
    }
    ok(threw, path);
  }
  let dup = false;
  try {
    encodeCpio([{ kind: "dir", path: "a" }, { kind: "dir", path: "a" }]);
  } catch (e) {
    dup = /duplicate/.test((e as Error).message);
  }
  ok(dup);
});

Deno.test("module load order from the installed modules.dep puts dependencies first", async () => {
  const kernel = await findHostKernel();
  const deps = parseModulesDep(await Deno.readTextFile(`${kernel.modulesDir}/modules.dep`));
  const order = moduleLoadOrder(deps, ["virtio_net", "virtio_mmio", "virtio_blk", "virtio_console"])
    .map(moduleName);
  // Every module comes after each of its dependencies.
  const byName = new Map([...deps.keys()].map((p) => [moduleName(p), p]));
  for (const [i, m] of order.entries()) {
    for (const d of deps.get(byName.get(m)!) ?? []) {
      ok(order.indexOf(moduleName(d)) < i, `${moduleName(d)} before ${m}`);
    }
  }
  ok(order.indexOf("virtio_ring") < order.indexOf("virtio"), "virtio_ring before virtio");
  ok(order.indexOf("failover") < order.indexOf("net_failover"));
  equal(new Set(order).size, order.length, "each module once");
  throws(() => moduleLoadOrder(deps, ["no_such_module"]), /module "no_such_module" not found/);
});

Deno.test("guest modules of the installed kernel include the bridge after stp and llc", async () => {
  const kernel = await findHostKernel();
  const paths = await guestModules(kernel);
  const order = paths.map(moduleName);
  // `brctl addbr` in a privileged pod container needs the bridge loaded (no modprobe in the guest).
  ok(GUEST_MODULES.includes("bridge"));
  for (const m of ["bridge", "stp", "llc", "virtio_console", "erofs"]) {
    ok(order.includes(m), `${m} in ${order.join(" ")}`);
  }
  ok(order.indexOf("llc") < order.indexOf("stp"), "llc before stp");
  ok(order.indexOf("stp") < order.indexOf("bridge"), "stp before bridge");
  for (const p of paths) ok((await Deno.stat(p)).isFile, `${p} exists`);
});

Deno.test("vmlinux extracted from the installed LZ4 bzImage is a PVH-bootable ELF", async () => {
  const kernel = await findHostKernel();
  const image = await Deno.readFile(kernel.bzImage);
  ok(findLz4Payload(image) > 0);
  ok(!hasPvhNote(image), "the bzImage itself is not an ELF");
  const dir = await Deno.makeTempDir({ prefix: "nbxq-vmlinux-" });
  try {
    await extractVmlinux(kernel.bzImage, `${dir}/vmlinux`);
    const elf = await Deno.readFile(`${dir}/vmlinux`);
    ok(elf.length > 20_000_000, `vmlinux is ${elf.length} bytes`);
    ok(hasPvhNote(elf));
    // A non-LZ4 input is refused with a clear error.
    await Deno.writeFile(`${dir}/bogus`, new Uint8Array(4096));
    await rejects(extractVmlinux(`${dir}/bogus`, `${dir}/out`), /has no LZ4 payload/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("stage-1 script only contains nerdbox-owned words", () => {
  const s = stage1Script(["virtio_ring", "virtio"]);
  match(s, /^#!\/bin\/busybox sh\n/);
  match(s, /insmod \/lib\/modules\/\$m\.ko/);
  match(s, /exec \/opt\/nerdbox\/deno run -A .* \/opt\/nerdbox\/guest\/main\.ts\n$/);
  let threw = false;
  try {
    stage1Script(["evil;rm -rf /"]);
  } catch {
    threw = true;
  }
  ok(threw, "a module name with shell syntax is refused");
});

Deno.test("busybox rootfs → ext4 image holds busybox and its applet links (debugfs)", async () => {
  const root = await makeBusyboxRootfs();
  const dir = await Deno.makeTempDir({ prefix: "nbxq-ext4-" });
  try {
    await makeExt4Image(root, `${dir}/r.ext4`, { label: "nbxq-test" });
    const ls = await run("debugfs", ["-R", "ls -l /bin", `${dir}/r.ext4`]);
    equal(ls.code, 0, ls.stderr);
    match(ls.stdout, /busybox/);
    const sh = await run("debugfs", ["-R", "stat /bin/sh", `${dir}/r.ext4`]);
    match(sh.stdout, /Fast link dest: "\/bin\/busybox"/);
    await rejects(
      makeExt4Image(`${dir}/missing`, `${dir}/x.ext4`, { label: "x" }),
      /is not a directory/,
    );
  } finally {
    await Deno.remove(root, { recursive: true });
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("guest image is cached by content hash and rebuilt when a source changes", async () => {
  const src = await Deno.makeTempDir({ prefix: "nbxq-src-" });
  const cache = await Deno.makeTempDir({ prefix: "nbxq-cache-" });
  try {
    await Deno.mkdir(`${src}/guest`);
    await Deno.writeTextFile(`${src}/guest/main.ts`, "console.log(1);\n");
    for (const shared of GUEST_SHARED_SOURCES) {
      await Deno.mkdir(`${src}/${shared.slice(0, shared.lastIndexOf("/"))}`, { recursive: true });
      await Deno.copyFile(new URL(`../../${shared}`, import.meta.url).pathname, `${src}/${shared}`);
    }
    const a = await ensureGuestImage({ sourceRoot: src, cacheDir: cache });
    for (const f of [a.kernel, a.initramfs, a.runtimeDisk, `${a.rootDir}/opt/nerdbox/deno`]) {
      ok((await Deno.stat(f)).size > 0, f);
    }
    equal(
      await Deno.readTextFile(`${a.rootDir}/opt/nerdbox/guest/main.ts`),
      "console.log(1);\n",
    );
    ok((await Deno.stat(`${a.rootDir}/lib64/ld-linux-x86-64.so.2`)).isFile);
    ok(a.modules.includes("virtio_console") && a.modules.includes("virtio_blk"));
    // The initramfs carries stage-1, the modules in order and the pre-warmed Deno cache.
    const listing = await run(
      "cpio",
      ["-it", "--quiet"],
      undefined,
      await Deno.readFile(a.initramfs),
    );
    equal(listing.code, 0, listing.stderr);
    const members = listing.stdout.split("\n");
    for (const m of ["init", "bin/busybox", "dev/console", "lib/modules/virtio_blk.ko"]) {
      ok(members.includes(m), m);
    }
    ok(members.includes("run/deno/gen/file/opt/nerdbox/guest/main.ts.js"), "pre-warmed cache");
    const again = await ensureGuestImage({ sourceRoot: src, cacheDir: cache });
    equal(again.hash, a.hash);
    // The inputs' identities name a memo of the record (no hashing when nothing changed).
    const memos = async () => {
      const found: string[] = [];
      for await (const e of Deno.readDir(cache)) if (e.name.startsWith("key-")) found.push(e.name);
      return found;
    };
    equal((await memos()).length, 1);
    deepEqual(await ensureGuestImage({ sourceRoot: src, cacheDir: cache }), a);
    // A new identity with the same content (touched): a second memo, the same image.
    await Deno.utime(`${src}/guest/main.ts`, new Date(), new Date(Date.now() - 5000));
    equal((await ensureGuestImage({ sourceRoot: src, cacheDir: cache })).hash, a.hash);
    equal((await memos()).length, 2);
    await Deno.writeTextFile(`${src}/guest/main.ts`, "console.log(2);\n");
    const b = await ensureGuestImage({ sourceRoot: src, cacheDir: cache });
    ok(b.hash !== a.hash, "a changed source gives a new image");
    equal(b.kernel, a.kernel, "the vmlinux is shared");
    const names = [];
    for await (const e of Deno.readDir(cache)) names.push(e.name);
    ok(!names.some((n) => n.includes(".tmp-")), `no half-written image left: ${names}`);
    // Missing guest init: a clear error.
    await Deno.remove(`${src}/guest/main.ts`);
    await rejects(ensureGuestImage({ sourceRoot: src, cacheDir: cache }), /guest\/main\.ts/);
  } finally {
    await Deno.remove(src, { recursive: true });
    await Deno.remove(cache, { recursive: true });
  }
});
