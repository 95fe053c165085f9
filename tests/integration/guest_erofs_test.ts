/**
 * guest init (dev mode, on the host) assembling a rootfs from erofs layers: two layers built with
 * the real mkfs.erofs, attached read-only as loop devices (in the VM: virtio-blk), mounted by the
 * guest and stacked with overlayfs under a writable upper. The workload sees the upper layer win,
 * the lower layer's files, and can write; the layer images are unchanged afterwards.
 */
import assert from "node:assert/strict";
import { makeNetns, makeRootfsDir, run, runGuest } from "../helpers/guest_env.ts";
import { type GuestConfig, MsgType } from "../../lib/guest_protocol.ts";
import { mkfsErofs, sha256File } from "../helpers/erofs.ts";

Deno.test("guest init: erofs layer devices stacked under a writable upper", async () => {
  const dir = await Deno.makeTempDir({ prefix: "guest-erofs-" });
  const ns = await makeNetns("gi-erofs");
  const loops: string[] = [];
  try {
    const base = await makeRootfsDir(`${dir}/base`);
    await Deno.writeTextFile(`${base}/etc/who`, "base\n");
    await Deno.writeTextFile(`${base}/etc/only-base`, "from-base\n");
    const top = `${dir}/top`;
    await Deno.mkdir(`${top}/etc`, { recursive: true });
    await Deno.writeTextFile(`${top}/etc/who`, "top\n");
    await mkfsErofs(base, `${dir}/base.erofs`);
    await mkfsErofs(top, `${dir}/top.erofs`);
    const before = [await sha256File(`${dir}/base.erofs`), await sha256File(`${dir}/top.erofs`)];
    for (const img of ["top.erofs", "base.erofs"]) {
      loops.push(
        (await run("losetup", ["--find", "--show", "--read-only", `${dir}/${img}`])).trim(),
      );
    }
    const config: GuestConfig = {
      version: 1,
      hostname: "erofs-box",
      rootfs: { kind: "layers", devices: loops },
      process: {
        args: [
          "sh",
          "-c",
          "cat /etc/who /etc/only-base; echo new > /etc/written; cat /etc/written",
        ],
        env: ["PATH=/bin"],
        cwd: "/",
        uid: 0,
        gid: 0,
        terminal: false,
      },
      networks: [],
      dhcpTimeoutMs: 1000,
    };
    const r = await runGuest({
      prefix: ["ip", "netns", "exec", ns.name, "unshare", "-m", "-u"],
      config,
    });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdoutOf(), "top\nfrom-base\nnew\n");
    assert.equal(r.json(MsgType.ERROR), undefined);
    assert.deepEqual(
      [await sha256File(`${dir}/base.erofs`), await sha256File(`${dir}/top.erofs`)],
      before,
    );
  } finally {
    for (const l of loops) await run("losetup", ["-d", l]).catch(() => {});
    await ns.remove();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});
