/**
 * The QEMU command line: structure, escaping by QEMU's comma rule (checked against real QEMU, which
 * must create a file with exactly the hostile name), refusal of control characters; MACs arrive
 * parsed (lib/spec/mac.ts), so a bad one cannot even be made.
 */
import { equal, match, ok, throws } from "node:assert/strict";
import fc from "fast-check";
import { kernelCmdline, qemuArgv, type QemuArgvInput, qemuOptValue } from "../../lib/vm/qemu.ts";
import { parseMac } from "../../lib/spec/mac.ts";

const base: QemuArgvInput = {
  accel: "tcg",
  cpus: 1,
  memoryMiB: 192,
  kernel: "/k/vmlinux",
  initramfs: "/k/initramfs.cpio",
  runtimeDisk: "/k/runtime.ext4",
  rootfsDisk: "/s/rootfs.ext4",
  channelSocket: "/s/ctl.sock",
  consoleLog: "/s/console.log",
  tscKhz: 2096021,
  nics: [],
};

function after(argv: string[], flag: string): string[] {
  return argv.flatMap((a, i) => (a === flag ? [argv[i + 1]] : []));
}

Deno.test("qemu argv: microvm with ACPI, fixed cmdline with tsc_early_khz, disks in order, channel", () => {
  const argv = qemuArgv(base);
  equal(after(argv, "-M")[0], "microvm,acpi=on");
  equal(after(argv, "-accel")[0], "tcg");
  equal(after(argv, "-cpu")[0], "max");
  for (const f of ["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"]) {
    ok(argv.includes(f));
  }
  const append = after(argv, "-append")[0];
  match(append, /^console=ttyS0 panic=-1 quiet cryptomgr\.notests /);
  match(append, / tsc_early_khz=2096021$/);
  const drives = after(argv, "-device").filter((d) => d.startsWith("virtio-blk-device"));
  equal(drives[0], "virtio-blk-device,drive=rt,serial=nerdbox-runtime");
  equal(drives[1], "virtio-blk-device,drive=rootfs,serial=nerdbox-rootfs");
  ok(after(argv, "-drive")[0].endsWith(",readonly=on"));
  ok(after(argv, "-chardev").includes("socket,id=ctl,path=/s/ctl.sock,server=off"));
  ok(after(argv, "-device").includes("virtserialport,chardev=ctl,name=nerdbox.ctl"));
  equal(after(argv, "-serial")[0], "chardev:con");
  // KVM: host CPU, no tsc_early_khz.
  const kvm = qemuArgv({ ...base, accel: "kvm" });
  equal(after(kvm, "-cpu")[0], "host");
  ok(!after(kvm, "-append")[0].includes("tsc_early_khz"));
});

Deno.test("qemu argv: NICs in order as stream/dgram netdevs with their MACs", () => {
  const argv = qemuArgv({
    ...base,
    nics: [
      { mac: parseMac("52:54:00:AA:BB:01"), netdev: { kind: "stream", path: "/p/passt.sock" } },
      {
        mac: parseMac("52:54:00:aa:bb:02"),
        netdev: { kind: "dgram", localPath: "/s/n1.sock", remotePath: "/p/g.sock" },
      },
    ],
  });
  const netdevs = after(argv, "-netdev");
  equal(netdevs[0], "stream,id=n0,server=off,addr.type=unix,addr.path=/p/passt.sock");
  equal(
    netdevs[1],
    "dgram,id=n1,local.type=unix,local.path=/s/n1.sock,remote.type=unix,remote.path=/p/g.sock",
  );
  const nics = after(argv, "-device").filter((d) => d.startsWith("virtio-net-device"));
  equal(nics[0], "virtio-net-device,netdev=n0,mac=52:54:00:aa:bb:01");
  equal(nics[1], "virtio-net-device,netdev=n1,mac=52:54:00:aa:bb:02");
  throws(() => parseMac("52:54:00:aa:bb"), /expected a MAC address of 6 hex byte pairs/);
});

Deno.test("qemu argv: hostile paths are escaped, never reach -append, control chars refused", () => {
  const evil = "/tmp/a,server=on,path=/etc/passwd";
  const argv = qemuArgv({
    ...base,
    channelSocket: evil,
    nics: [{ mac: parseMac("52:54:00:00:00:01"), netdev: { kind: "stream", path: evil } }],
  });
  ok(
    after(argv, "-chardev").includes(
      "socket,id=ctl,path=/tmp/a,,server=on,,path=/etc/passwd,server=off",
    ),
  );
  ok(after(argv, "-netdev")[0].endsWith("addr.path=/tmp/a,,server=on,,path=/etc/passwd"));
  ok(!after(argv, "-append")[0].includes("/tmp"));
  throws(() => qemuArgv({ ...base, consoleLog: "/tmp/x\nquit" }), /console log path .*control/);
  throws(() => qemuOptValue("", "socket"), /socket "": expected a non-empty value/);
  throws(() => qemuArgv({ ...base, cpus: 0 }), /cpus 0: expected a positive integer/);
  fc.assert(fc.property(fc.string({ minLength: 1 }), (s) => {
    // deno-lint-ignore no-control-regex
    fc.pre(!/[\x00-\x1f\x7f]/.test(s));
    const e = qemuOptValue(s, "v");
    // Unescaping QEMU's way gives the original back, and no single comma survives.
    equal(e.replaceAll(",,", ","), s);
    ok(!/(^|[^,]),(?!,)/.test(e.replaceAll(",,", "")));
  }));
  equal(kernelCmdline({ probe: true }).split(" ").at(-1), "nerdbox.probe");
});

Deno.test("qemu parses an escaped option value back to the exact hostile file name", async () => {
  const dir = await Deno.makeTempDir({ prefix: "nbxq-esc-" });
  const name = `${dir}/con,path=pwned,server=on,x`;
  const child = new Deno.Command("qemu-system-x86_64", {
    args: [
      "-M",
      "none",
      "-nodefaults",
      "-display",
      "none",
      "-S",
      "-chardev",
      `file,id=c,path=${qemuOptValue(name, "path")}`,
    ],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  try {
    let found = false;
    for (let i = 0; i < 200 && !found; i++) {
      found = await Deno.stat(name).then(() => true, () => false);
      if (!found) await new Promise((r) => setTimeout(r, 25));
    }
    ok(found, "QEMU created the file named exactly as given");
    ok(!(await Deno.stat(`${dir}/pwned`).then(() => true, () => false)));
    ok(!(await Deno.stat(`${dir}/con`).then(() => true, () => false)));
  } finally {
    try {
      child.kill("SIGKILL");
    } catch {
      // exited already (its stderr says why)
    }
    await child.output();
    await Deno.remove(dir, { recursive: true });
  }
});
