/**
 * virtio-fs host side against the real virtiofsd (no VM): argv and refusals, the daemon's start
 * and stop (socket made, then removed, process gone), the QEMU argv, and a dead run's virtiofsd
 * swept — by its record, and by its `--socket-path` when the record missed it.
 */
import { deepEqual, equal, match, ok, rejects, throws } from "node:assert/strict";
import {
  startVirtiofsd,
  virtiofsAvailable,
  virtiofsdArgs,
  virtiofsQemuArgs,
} from "../../lib/vm/virtiofs.ts";
import { qemuArgv } from "../../lib/vm/qemu_argv.ts";
import { sweepDeadRuns, writeRunRecord } from "../../lib/vm/run_state.ts";
import { procRef } from "../../lib/proc.ts";
import { shareBlocker } from "../../lib/vm/qemu_rootfs.ts";
import { virtiofsTags } from "../../guest/virtiofs.ts";

function alive(pid: number): boolean {
  try {
    const s = Deno.readTextFileSync(`/proc/${pid}/stat`);
    return s.slice(s.lastIndexOf(")") + 2)[0] !== "Z";
  } catch {
    return false;
  }
}

async function deadOwner() {
  const c = new Deno.Command("true").spawn();
  const ref = procRef(c.pid) ?? { pid: c.pid, start: "1" };
  await c.status;
  return ref;
}

Deno.test("virtiofs: available here (root, Debian's virtiofsd installed)", () => {
  equal(virtiofsAvailable(), undefined);
  match(virtiofsAvailable("/nonexistent/virtiofsd") ?? "", /is missing/);
});

Deno.test("virtiofsd argv: chroot sandbox, source and socket; refusals name the field", () => {
  deepEqual(virtiofsdArgs({ source: "/srv/root", socket: "/run/x/ctl/fs0.sock" }), [
    "--socket-path=/run/x/ctl/fs0.sock",
    "-o",
    "source=/srv/root,sandbox=chroot,cache=auto,xattr,no_posix_lock,no_flock,log_level=err",
    "--rlimit-nofile=0",
  ]);
  throws(() => virtiofsdArgs({ source: "/a,b", socket: "/s" }), /virtio-fs source "\/a,b"/);
  throws(() => virtiofsdArgs({ source: "rel", socket: "/s" }), /expected an absolute path/);
  throws(() => virtiofsdArgs({ source: "/a", socket: "/s\n" }), /virtio-fs socket/);
});

Deno.test("QEMU argv with a share: shared memfd RAM, modern virtio-mmio, vhost-user-fs-device", () => {
  deepEqual(virtiofsQemuArgs([], 192), []);
  const argv = qemuArgv({
    accel: "tcg",
    cpus: 1,
    memoryMiB: 256,
    kernel: "/k",
    initramfs: "/i",
    runtimeDisk: "/r",
    consoleLog: "/c",
    nics: [],
    shares: [{ tag: "rootfs", socket: "/run/a,b/ctl/fs0.sock" }],
  });
  const text = argv.join(" ");
  ok(argv.includes("microvm,acpi=on,memory-backend=nbxmem"), text);
  ok(argv.includes("virtio-mmio.force-legacy=false"), text);
  ok(argv.includes("memory-backend-memfd,id=nbxmem,size=256M,share=on"), text);
  ok(argv.includes("socket,id=fs0,path=/run/a,,b/ctl/fs0.sock"), text);
  ok(argv.includes("vhost-user-fs-device,chardev=fs0,tag=rootfs"), text);
  ok(!text.includes("rootfs,format=raw"), "no rootfs disk when shared");
  throws(() => virtiofsQemuArgs([{ tag: "bad tag", socket: "/s" }], 192), /virtio-fs tag/);
});

Deno.test("shareBlocker: shares by default; ext4 only when asked, for commas, long sockets", () => {
  equal(shareBlocker("/srv/root", "/run/nerdbox/x/ctl/fs0.sock"), undefined);
  match(shareBlocker("/srv/a,b", "/run/s") ?? "", /has a comma/);
  match(shareBlocker("/srv/root", `/run/${"x".repeat(120)}`) ?? "", /longer than 107 bytes/);
  Deno.env.set("NERDBOX_QEMU_ROOTFS", "ext4");
  try {
    equal(shareBlocker("/srv/root", "/run/s"), "NERDBOX_QEMU_ROOTFS=ext4");
  } finally {
    Deno.env.delete("NERDBOX_QEMU_ROOTFS");
  }
});

Deno.test("startVirtiofsd: socket appears, stop() ends the daemon and removes the socket", async () => {
  const dir = await Deno.makeTempDir({ prefix: "nbx-vfs-" });
  try {
    await Deno.mkdir(`${dir}/share`);
    let spawned = 0;
    const s = await startVirtiofsd({
      tag: "rootfs",
      source: `${dir}/share`,
      socket: `${dir}/fs0.sock`,
      onSpawn: (pid) => {
        spawned = pid;
      },
    });
    equal(spawned, s.pid);
    ok((await Deno.lstat(s.socket)).isSocket);
    ok(alive(s.pid));
    await s.stop();
    await s.stop(); // idempotent
    ok(!alive(s.pid));
    await rejects(Deno.lstat(s.socket), Deno.errors.NotFound);
    await rejects(
      startVirtiofsd({ tag: "rootfs", source: `${dir}/missing`, socket: `${dir}/x.sock` }),
      /virtio-fs source .*missing.*: not a directory/,
    );
    await rejects(
      startVirtiofsd({ tag: "a b", source: `${dir}/share`, socket: `${dir}/x.sock` }),
      /virtio-fs tag "a b"/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("dead run: its virtiofsd is killed by the sweep, recorded or found by --socket-path", async () => {
  const root = await Deno.makeTempDir({ prefix: "nbx-vfs-sweep-" });
  const started: number[] = [];
  try {
    for (const name of ["rec", "norec"]) {
      const run = `${root}/${name}`;
      await Deno.mkdir(`${run}/ctl`, { recursive: true });
      await Deno.mkdir(`${run}/share`);
      const s = await startVirtiofsd({
        tag: "rootfs",
        source: `${run}/share`,
        socket: `${run}/ctl/fs0.sock`,
      });
      started.push(s.pid);
      await writeRunRecord(run, {
        version: 1,
        owner: await deadOwner(),
        ...(name === "rec" ? { virtiofsd: [procRef(s.pid)!] } : {}),
      });
    }
    const swept = (await sweepDeadRuns(root)).sort();
    deepEqual(swept, [`${root}/norec`, `${root}/rec`]);
    for (let i = 0; i < 50 && started.some(alive); i++) await new Promise((r) => setTimeout(r, 20));
    ok(!started.some(alive), "both daemons are gone");
  } finally {
    for (const pid of started) {
      try {
        Deno.kill(pid, "SIGKILL");
      } catch { /* gone */ }
    }
    await Deno.remove(root, { recursive: true }).catch(() => {});
  }
});

Deno.test("guest: the VM's virtio-fs tags, listed when a mount names one it does not have", async () => {
  const sys = await Deno.makeTempDir({ prefix: "nb-sysfs-" });
  try {
    for (const [n, tag] of [["0", "rootfs\n"], ["1", "/dev/root\n"]]) {
      await Deno.mkdir(`${sys}/${n}`);
      await Deno.writeTextFile(`${sys}/${n}/tag`, tag);
    }
    deepEqual(virtiofsTags(sys), ["/dev/root", "rootfs"]);
    equal(virtiofsTags(`${sys}/missing`), undefined, "older kernels do not list them");
  } finally {
    await Deno.remove(sys, { recursive: true });
  }
});
