/**
 * The QEMU backend shares the container's rootfs directory with virtio-fs: no per-run copy
 * (no rootfs.ext4 is made), the workload sees the directory's files and its writes land in the
 * directory itself (as with runc), and the run leaves no virtiofsd, socket or state dir behind.
 * `NERDBOX_QEMU_ROOTFS=ext4` (the fallback where sharing cannot work) still boots, on a copy.
 */
import { equal, ok } from "node:assert/strict";
import { startQemuVm } from "../../lib/vm/qemu.ts";
import type { VmPlan } from "../../lib/vm/types.ts";
import { makeBusyboxRootfs } from "../helpers/rootfs.ts";
import { listProcesses } from "../helpers/procs.ts";
import { qemuTestPlan } from "../helpers/qemu_plan.ts";

function plan(rootfs: string, stateDir: string, script: string): VmPlan {
  return qemuTestPlan({ id: "nbxq-vfs", rootfs, stateDir, args: ["/bin/sh", "-c", script] });
}

function collect() {
  const chunks: Uint8Array[] = [];
  return {
    stdio: {
      stdout: new WritableStream<Uint8Array>({ write: (c) => void chunks.push(c) }),
      stderr: new WritableStream<Uint8Array>({ write: (c) => void chunks.push(c) }),
    },
    text: () => new TextDecoder().decode(new Uint8Array(chunks.flatMap((c) => [...c]))),
  };
}

/** Processes whose command line names `dir`. */
async function procsNaming(dir: string): Promise<string[]> {
  return (await listProcesses()).filter((p) => p.cmdline.includes(dir)).map((p) => p.cmdline);
}

async function run(rootfs: string, script: string) {
  const stateDir = `/run/nbxq-vfs-${crypto.randomUUID().slice(0, 8)}`;
  const out = collect();
  let sawDisk = false;
  const h = await startQemuVm(plan(rootfs, stateDir, script), out.stdio, {
    onPhase: (p) => {
      if (p === "spawned") {
        sawDisk = Deno.statSync(stateDir).isDirectory &&
          (() => {
            try {
              Deno.statSync(`${stateDir}/rootfs.ext4`);
              return true;
            } catch {
              return false;
            }
          })();
      }
    },
  });
  const exit = await h.exited;
  await h.dispose();
  return { exit, output: out.text(), sawDisk, stateDir };
}

Deno.test("virtio-fs rootfs: no copy, the host's files are seen, the container's writes land in the directory", async () => {
  const rootfs = await makeBusyboxRootfs();
  try {
    await Deno.writeTextFile(`${rootfs}/from-host.txt`, "host-wrote-this\n");
    const r = await run(
      rootfs,
      "cat /from-host.txt; echo container-wrote-this > /from-guest.txt; mkdir -p /var/x; " +
        "echo deep > /var/x/f; rm /from-host.txt; echo done",
    );
    equal(r.exit.code, 0, `${r.exit.error ?? ""}\n${r.output}`);
    ok(r.output.includes("host-wrote-this"), r.output);
    ok(!r.sawDisk, "no rootfs.ext4 was built");
    equal(await Deno.readTextFile(`${rootfs}/from-guest.txt`), "container-wrote-this\n");
    equal(await Deno.readTextFile(`${rootfs}/var/x/f`), "deep\n");
    ok(!(await Deno.lstat(`${rootfs}/from-host.txt`).then(() => true, () => false)), "rm landed");
    ok(!(await Deno.lstat(r.stateDir).then(() => true, () => false)), "state dir removed");
    const left = await procsNaming(r.stateDir);
    equal(left.length, 0, `left running: ${left.join("\n")}`);
  } finally {
    await Deno.remove(rootfs, { recursive: true });
  }
});

Deno.test("NERDBOX_QEMU_ROOTFS=ext4: the fallback copy boots; writes stay in the copy", async () => {
  const rootfs = await makeBusyboxRootfs();
  Deno.env.set("NERDBOX_QEMU_ROOTFS", "ext4");
  try {
    const r = await run(rootfs, "echo x > /from-guest.txt; echo done");
    equal(r.exit.code, 0, `${r.exit.error ?? ""}\n${r.output}`);
    ok(r.sawDisk, "rootfs.ext4 was built");
    ok(!(await Deno.lstat(`${rootfs}/from-guest.txt`).then(() => true, () => false)));
    ok(!(await Deno.lstat(r.stateDir).then(() => true, () => false)), "state dir removed");
  } finally {
    Deno.env.delete("NERDBOX_QEMU_ROOTFS");
    await Deno.remove(rootfs, { recursive: true });
  }
});
