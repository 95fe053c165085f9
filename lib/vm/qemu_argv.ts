/**
 * The QEMU command line for a nerdbox guest, as a pure function: microvm with ACPI, PVH vmlinux,
 * stage-1 initramfs, the runtime and rootfs disks, the `nerdbox.ctl` virtio-serial channel, the
 * serial console to a file, and the NICs in order. Every path and name is one argv element or an
 * option value escaped by QEMU's comma rule; nothing user-given enters the kernel command line.
 */
import { NONET_CMDLINE_WORD, PROBE_CMDLINE_WORD, RUNTIME_DISK_SERIAL } from "./guest_image.ts";
import { CHANNEL_PORT_NAME } from "../guest_protocol.ts";
import { VIRTIOFS_MEMORY_BACKEND, virtiofsQemuArgs } from "./virtiofs.ts";
import type { Mac } from "../spec/mac.ts";
import { layerSerial } from "./erofs_layers.ts";

/** A resolved accelerator. */
export type QemuAccel = "kvm" | "tcg";

/** How one NIC reaches its provider. */
export type QemuNetdev =
  | { kind: "stream"; path: string }
  | { kind: "dgram"; localPath: string; remotePath: string }
  /** A tap QEMU opens by name in its own netns (the tc-redirect pod mode). */
  | { kind: "tap"; ifname: string };

/** One NIC, in guest order. */
export interface QemuNic {
  /** Parsed once (lib/spec/mac.ts): goes into the argv as is. */
  mac: Mac;
  netdev: QemuNetdev;
}

/** Everything `qemuArgv` needs. */
export interface QemuArgvInput {
  accel: QemuAccel;
  cpus: number;
  memoryMiB: number;
  kernel: string;
  initramfs: string;
  runtimeDisk: string;
  /** The container's rootfs image (`/dev/vdb`), when it is not shared (ext4 fallback). */
  rootfsDisk?: string;
  /** erofs layer blobs (uppermost first), attached read-only after the runtime disk (`/dev/vdb`…). */
  layerDisks?: string[];
  /** Host directories shared with virtio-fs (lib/vm/virtiofs.ts), by tag and daemon socket. */
  shares?: Array<{ tag: string; socket: string }>;
  /** UNIX socket the host listens on for the channel (QEMU connects). */
  channelSocket?: string;
  /** File receiving the serial console. */
  consoleLog: string;
  /** Host TSC rate for `tsc_early_khz` (TCG on microvm needs it). */
  tscKhz?: number;
  nics: QemuNic[];
  /** Stage-1 probe boot: checks the image and powers off. */
  probe?: boolean;
}

/** Serial of the rootfs disk's virtio-blk device. */
export const ROOTFS_DISK_SERIAL = "nerdbox-rootfs";
/** Guest device of the rootfs disk (second virtio-blk device; the runtime disk is first). */
export const ROOTFS_GUEST_DEVICE = "/dev/vdb";

/**
 * Escapes a value for a QEMU `-opt key=value,…` string: `,` doubles; control characters are
 * refused (they cannot be meant and would corrupt logs). `what` names the value in errors.
 */
export function qemuOptValue(value: string, what: string): string {
  // deno-lint-ignore no-control-regex
  if (value === "" || /[\x00-\x1f\x7f]/.test(value)) {
    throw new Error(
      `${what} ${JSON.stringify(value)}: expected a non-empty value without control characters`,
    );
  }
  return value.replaceAll(",", ",,");
}

/** The fixed kernel command line (no user values). */
export function kernelCmdline(opts: { tscKhz?: number; probe?: boolean; noNet?: boolean }): string {
  const words = [
    "console=ttyS0",
    "panic=-1",
    "quiet",
    "cryptomgr.notests",
    "no_timer_check",
    "tsc=reliable",
    "mitigations=off",
    "nokaslr",
    "init_on_alloc=0",
    "8250.nr_uarts=1",
    "random.trust_cpu=on",
  ];
  // No NIC: stage-1 skips the virtio-net modules (a fixed word, no user value).
  if (opts.noNet) words.push(NONET_CMDLINE_WORD);
  if (opts.tscKhz !== undefined) {
    if (!Number.isInteger(opts.tscKhz) || opts.tscKhz <= 0) {
      throw new Error(`tsc_early_khz ${opts.tscKhz}: expected a positive integer`);
    }
    words.push(`tsc_early_khz=${opts.tscKhz}`);
  }
  if (opts.probe) words.push(PROBE_CMDLINE_WORD);
  return words.join(" ");
}

/** The argv (after the QEMU binary). */
export function qemuArgv(input: QemuArgvInput): string[] {
  for (const [what, v] of [["cpus", input.cpus], ["memoryMiB", input.memoryMiB]] as const) {
    if (!Number.isInteger(v) || v < 1) throw new Error(`${what} ${v}: expected a positive integer`);
  }
  const esc = qemuOptValue;
  const shares = input.shares ?? [];
  const args = [
    "-M",
    // virtio-fs maps guest RAM into virtiofsd: RAM must come from the shared memfd backend.
    shares.length > 0
      ? `microvm,acpi=on,memory-backend=${VIRTIOFS_MEMORY_BACKEND}`
      : "microvm,acpi=on",
    // Modern (version 2) virtio-mmio for every device: libvhost-user refuses legacy devices.
    "-global",
    "virtio-mmio.force-legacy=false",
    "-accel",
    input.accel,
    "-cpu",
    input.accel === "kvm" ? "host" : "max",
    "-m",
    String(input.memoryMiB),
    "-smp",
    String(input.cpus),
    "-nodefaults",
    "-no-user-config",
    "-nographic",
    "-no-reboot",
    "-kernel",
    input.kernel,
    "-initrd",
    input.initramfs,
    "-append",
    kernelCmdline({
      tscKhz: input.accel === "tcg" ? input.tscKhz : undefined,
      probe: input.probe,
      noNet: input.nics.length === 0,
    }),
    "-chardev",
    `file,id=con,path=${esc(input.consoleLog, "console log path")}`,
    "-serial",
    "chardev:con",
    "-drive",
    `file=${esc(input.runtimeDisk, "runtime disk path")},if=none,id=rt,format=raw,readonly=on`,
    "-device",
    `virtio-blk-device,drive=rt,serial=${RUNTIME_DISK_SERIAL}`,
  ];
  if (input.rootfsDisk !== undefined) {
    args.push(
      "-drive",
      `file=${esc(input.rootfsDisk, "rootfs disk path")},if=none,id=rootfs,format=raw`,
      "-device",
      `virtio-blk-device,drive=rootfs,serial=${ROOTFS_DISK_SERIAL}`,
    );
  }
  (input.layerDisks ?? []).forEach((path, i) => {
    args.push(
      "-drive",
      `file=${esc(path, `erofs layer ${i} path`)},if=none,id=layer${i},format=raw,readonly=on`,
      "-device",
      `virtio-blk-device,drive=layer${i},serial=${layerSerial(i)}`,
    );
  });
  args.push(...virtiofsQemuArgs(shares, input.memoryMiB));
  if (input.channelSocket !== undefined) {
    args.push(
      "-device",
      "virtio-serial-device",
      "-chardev",
      `socket,id=ctl,path=${esc(input.channelSocket, "channel socket path")},server=off`,
      "-device",
      `virtserialport,chardev=ctl,name=${CHANNEL_PORT_NAME}`,
    );
  }
  input.nics.forEach((nic, i) => {
    const id = `n${i}`;
    const nd = nic.netdev;
    if (nd.kind === "tap" && !/^[A-Za-z0-9_.-]{1,15}$/.test(nd.ifname)) {
      throw new Error(`network ${i}: tap ${JSON.stringify(nd.ifname)}: expected an interface name`);
    }
    const netdev = nd.kind === "tap"
      ? `tap,id=${id},ifname=${nd.ifname},script=no,downscript=no`
      : nd.kind === "stream"
      ? `stream,id=${id},server=off,addr.type=unix,addr.path=${
        esc(nd.path, `network ${i}: socket`)
      }`
      : `dgram,id=${id},local.type=unix,local.path=${
        esc(nd.localPath, `network ${i}: local socket`)
      },remote.type=unix,remote.path=${esc(nd.remotePath, `network ${i}: socket`)}`;
    args.push("-netdev", netdev, "-device", `virtio-net-device,netdev=${id},mac=${nic.mac}`);
  });
  return args;
}
