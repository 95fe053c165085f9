/**
 * Boot benchmark, side by side in one run (interleaved rounds, same load):
 *  - bare: the same vmlinux on the same QEMU command line with a busybox-only initramfs whose /init
 *    runs `true` and powers off (spawn → QEMU exit);
 *  - nerdbox: startQemuVm on a busybox rootfs running `true`, no NIC (call → workload started,
 *    call → exit), and the guest init's own share (its "total N ms since process start" log line).
 * Prints medians and the ratio nerdbox/bare. `deno task bench` runs it as one bench case; or run
 * it directly: `bin/deno run -A bench/boot_bench.ts [rounds]`.
 */
import { encodeCpio } from "../lib/vm/initramfs.ts";
import { ensureGuestImage } from "../lib/vm/guest_image.ts";
import { hostTscKhz } from "../lib/vm/kernel.ts";
import { qemuArgv, qemuBinary, startQemuVm } from "../lib/vm/qemu.ts";
import { makeBusyboxRootfs } from "../lib/vm/busybox_rootfs.ts";
import type { VmPlan } from "../lib/vm/types.ts";
import { reportEntry } from "./report_entry.ts";
import { median } from "./bench_util.ts";

async function bareBoot(kernel: string, initramfs: string, runtimeDisk: string, dir: string) {
  const args = qemuArgv({
    accel: "tcg",
    cpus: 1,
    memoryMiB: 192,
    kernel,
    initramfs,
    runtimeDisk,
    consoleLog: `${dir}/bare-console.log`,
    tscKhz: await hostTscKhz(),
    nics: [],
  });
  const t = performance.now();
  const out = await new Deno.Command(qemuBinary(), {
    args,
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  })
    .output();
  const ms = performance.now() - t;
  const console = await Deno.readTextFile(`${dir}/bare-console.log`);
  if (!out.success || !console.includes("bare-workload-done")) {
    const err = new TextDecoder().decode(out.stderr);
    throw new Error(`bare boot failed (${out.code}): ${err} ${console.slice(-500)}`);
  }
  return ms;
}

async function nerdboxBoot(rootfs: string, dir: string, round: number) {
  const plan: VmPlan = {
    id: `bench-${round}`,
    backend: "qemu",
    cpus: 1,
    memoryMiB: 192,
    rootfs,
    hostname: "bench",
    process: { args: ["/bin/true"], env: [], cwd: "/", uid: 0, gid: 0, terminal: false },
    network: { kind: "nics", nics: [] },
    stateDir: `${dir}/vm-${round}`,
    accel: "tcg",
  };
  let startedAt = NaN;
  let initTotal = NaN;
  let timingLine = "";
  const phases: Record<string, number> = {};
  const t = performance.now();
  const h = await startQemuVm(plan, {
    stdout: new WritableStream(),
    stderr: new WritableStream(),
  }, {
    onLog: (l) => {
      const m = l.match(/total (\d+) ms/);
      if (m) initTotal = Number(m[1]);
      if (/^timing:/.test(l)) timingLine = l;
    },
    onPhase: (name, ms) => {
      phases[name] = ms;
      if (name === "started") startedAt = ms;
    },
  });
  const exit = await h.exited;
  const total = performance.now() - t;
  await h.dispose();
  if (exit.code !== 0) throw new Error(`nerdbox boot failed: ${exit.error}`);
  return { toWorkload: startedAt, total, initTotal, timingLine, spawned: phases.spawned ?? NaN };
}

/** Runs `rounds` interleaved rounds and returns the report text. */
export async function bootBench(rounds = 3): Promise<string> {
  const image = await ensureGuestImage();
  const dir = await Deno.makeTempDir({ prefix: "nerdbox-bench-" });
  await Deno.chmod(dir, 0o755);
  const rootfs = await makeBusyboxRootfs();
  try {
    const init = "#!/bin/busybox sh\n/bin/busybox mount -t proc proc /proc\n/bin/true\n" +
      "echo bare-workload-done\n/bin/busybox poweroff -f\n";
    await Deno.writeFile(
      `${dir}/bare.cpio`,
      encodeCpio([
        { kind: "dir", path: "bin" },
        { kind: "dir", path: "dev" },
        { kind: "dir", path: "proc" },
        { kind: "chardev", path: "dev/console", major: 5, minor: 1 },
        {
          kind: "file",
          path: "bin/busybox",
          mode: 0o755,
          data: await Deno.readFile("/bin/busybox"),
        },
        { kind: "symlink", path: "bin/true", target: "busybox" },
        { kind: "file", path: "init", mode: 0o755, data: new TextEncoder().encode(init) },
      ]),
    );
    const bare: number[] = [];
    const toWorkload: number[] = [];
    const total: number[] = [];
    const initShare: number[] = [];
    let timingLine = "";
    const spawned: number[] = [];
    for (let i = 0; i < rounds; i++) {
      bare.push(await bareBoot(image.kernel, `${dir}/bare.cpio`, image.runtimeDisk, dir));
      const r = await nerdboxBoot(rootfs, dir, i);
      toWorkload.push(r.toWorkload);
      total.push(r.total);
      initShare.push(r.initTotal);
      timingLine = r.timingLine;
      spawned.push(r.spawned);
    }
    const b = median(bare);
    const w = median(toWorkload);
    const tt = median(total);
    const it = median(initShare);
    const sp = median(spawned);
    const f = (ms: number) => `${(ms / 1000).toFixed(2)} s`;
    return [
      `boot benchmark (QEMU/TCG microvm, ${rounds} interleaved rounds, medians; load ${
        (await Deno.readTextFile("/proc/loadavg")).split(" ")[0]
      })`,
      `  bare kernel + busybox /init, spawn → exit:      ${f(b)}`,
      `  nerdbox: startQemuVm → workload started:        ${f(w)}   ratio ${
        (w / b).toFixed(2)
      }×  (issue 14 baseline 3.80×, goal ≤ 1.5×)`,
      `  nerdbox: startQemuVm → exit reported:           ${f(tt)}   ratio ${(tt / b).toFixed(2)}×`,
      `  of which host prep (image check, rootfs share or copy, passt) → QEMU spawned: ${f(sp)}`,
      `  guest init's own share (Deno start → workload): ${
        Number.isNaN(it)
          ? "n/a (no timing log)"
          : `${f(it)} (${((it / w) * 100).toFixed(0)} % of boot-to-workload)`
      }`,
      `  kernel + stage-1 (the rest): ${f(w - sp - it)}`,
      `  last guest init ${timingLine || "timing: (none logged)"}`,
    ].join("\n");
  } finally {
    await Deno.remove(rootfs, { recursive: true }).catch(() => {});
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

await reportEntry(import.meta, "boot", "BOOT_BENCH_ROUNDS", bootBench);
