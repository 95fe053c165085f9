/**
 * Boot time of one `nerdbox run ROOTFS -- /bin/true`, libkrun beside QEMU (both on KVM), in
 * interleaved rounds on the same machine: meant for the nested L1 (tests/nested/, where /dev/kvm
 * runs guests) or any host with a working /dev/kvm. Each sample is the whole command's wall time
 * (Deno start-up, plan, guest image lookup, boot, workload, power-off). Prints one JSON object.
 * Not a `deno bench` file (it needs /dev/kvm): run it with `bin/deno run -A bench/nested_boot.ts
 * [rounds]`, or by the rig with NERDBOX_NESTED_BENCH=1.
 */
import { makeBusyboxRootfs } from "../lib/vm/busybox_rootfs.ts";
import { kvmStatus } from "../lib/vm/plan.ts";
import { median } from "./bench_util.ts";

const NERDBOX = new URL("../bin/nerdbox", import.meta.url).pathname;
const VARIANTS: Record<string, string[]> = {
  libkrun: ["--backend", "libkrun"],
  qemu_kvm: ["--backend", "qemu", "--accel", "kvm"],
};
// QEMU under TCG is left out: inside the nested L1 it emulates on an emulated CPU (minutes).

async function once(rootfs: string, flags: string[]): Promise<number> {
  const t = performance.now();
  const out = await new Deno.Command(NERDBOX, {
    args: ["run", ...flags, rootfs, "--", "/bin/true"],
    env: { NERDBOX_BOOT_TIMEOUT_MS: "300000" },
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).output();
  const ms = performance.now() - t;
  if (!out.success) {
    throw new Error(
      `nerdbox run ${flags.join(" ")} failed: ${new TextDecoder().decode(out.stderr)}`,
    );
  }
  return ms;
}

if (import.meta.main) {
  const kvm = kvmStatus();
  if (!kvm.usable) {
    throw new Error(`this benchmark needs a /dev/kvm that runs guests: ${kvm.reason}`);
  }
  const rounds = Number(Deno.args[0] ?? 3);
  const rootfs = await makeBusyboxRootfs();
  try {
    for (const flags of Object.values(VARIANTS)) await once(rootfs, flags); // warm caches
    const samples: Record<string, number[]> = {};
    for (let i = 0; i < rounds; i++) {
      for (const [name, flags] of Object.entries(VARIANTS)) {
        (samples[name] ??= []).push(Math.round(await once(rootfs, flags)));
      }
    }
    const medians = Object.fromEntries(Object.entries(samples).map(([k, v]) => [k, median(v)]));
    console.log(JSON.stringify({ rounds, medianMs: medians, samplesMs: samples }));
  } finally {
    await Deno.remove(rootfs, { recursive: true });
  }
}
