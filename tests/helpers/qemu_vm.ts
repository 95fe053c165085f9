/**
 * Test helper: boots a busybox workload under the QEMU backend (TCG) and collects what both sides
 * see: the workload's stdout/stderr, the guest's network report and init log, the exit.
 */
import { startQemuVm } from "../../lib/vm/qemu.ts";
import { validateNetnsPath } from "../../lib/net/netns.ts";
import type { NetworkPlan, VmExit, VmHandle, VmPlan } from "../../lib/vm/types.ts";
import type { GuestNetworkReport } from "../../lib/guest_protocol.ts";

/** A VM under test. */
export interface TestVm {
  handle: VmHandle;
  /** Workload stdout so far. */
  stdout(): string;
  stderr(): string;
  logs: string[];
  network?: GuestNetworkReport;
  /** Resolves once stdout matches `re` (rejects when the VM exits first). */
  waitStdout(re: RegExp): Promise<RegExpMatchArray>;
  /** The exit plus everything collected, after cleanup. */
  done: Promise<VmExit>;
}

/** Options of bootVm. */
export interface BootOptions {
  rootfs: string;
  script: string;
  network: NetworkPlan;
  netns?: string;
  dhcpTimeoutMs?: number;
  passtNoDhcp?: boolean;
  hostname?: string;
  /** This VM's state dir (default: a fresh one under /run). */
  stateDir?: string;
  /** OCI runtime spec crun applies in the guest (VmPlan.oci). */
  oci?: Record<string, unknown>;
}

/** Boots `sh -c script` in a fresh state dir under /run (mode 0755, so passt can reach it). */
export async function bootVm(o: BootOptions): Promise<TestVm> {
  const stateDir = o.stateDir ?? `/run/nbxq-vm-${crypto.randomUUID().slice(0, 12)}`;
  const plan: VmPlan = {
    id: stateDir.slice(5),
    backend: "qemu",
    cpus: 1,
    memoryMiB: 256,
    rootfs: o.rootfs,
    hostname: o.hostname ?? "nbxq",
    process: {
      args: ["/bin/sh", "-c", o.script],
      env: ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"],
      cwd: "/",
      uid: 0,
      gid: 0,
      terminal: false,
    },
    network: o.network,
    stateDir,
    accel: "tcg",
    ...(o.netns ? { netns: validateNetnsPath(o.netns, "test netns") } : {}),
    ...(o.oci ? { oci: o.oci } : {}),
  };
  let out = "";
  let err = "";
  const waiters: Array<() => void> = [];
  const dec = new TextDecoder();
  const sink = (f: (s: string) => void) =>
    new WritableStream<Uint8Array>({
      write(c) {
        f(dec.decode(c, { stream: true }));
        for (const w of waiters.splice(0)) w();
      },
    });
  const logs: string[] = [];
  const vm: Partial<TestVm> & { logs: string[] } = { logs };
  const handle = await startQemuVm(plan, {
    stdout: sink((s) => (out += s)),
    stderr: sink((s) => (err += s)),
  }, {
    onLog: (l) => logs.push(l),
    onNetwork: (n) => (vm.network = n),
    ...(o.dhcpTimeoutMs !== undefined ? { dhcpTimeoutMs: o.dhcpTimeoutMs } : {}),
    ...(o.passtNoDhcp ? { passtNoDhcp: true } : {}),
  });
  let finished = false;
  const done = handle.exited.finally(() => {
    finished = true;
    for (const w of waiters.splice(0)) w();
  });
  return Object.assign(vm, {
    handle,
    stdout: () => out,
    stderr: () => err,
    done,
    async waitStdout(re: RegExp) {
      while (true) {
        const m = out.match(re);
        if (m) return m;
        if (finished) {
          throw new Error(
            `VM exited before stdout matched ${re}: ${out}\n${err}\n${(await done).error ?? ""}`,
          );
        }
        await new Promise<void>((r) => waiters.push(r));
      }
    },
  }) as TestVm;
}

/** Runs a command to completion and returns its stdout (throws with stderr on failure). */
export async function runOk(cmd: string, args: string[]): Promise<string> {
  const out = await new Deno.Command(cmd, { args, stdin: "null", stdout: "piped", stderr: "piped" })
    .output();
  const dec = new TextDecoder();
  if (!out.success) throw new Error(`${cmd} ${args.join(" ")}: ${dec.decode(out.stderr)}`);
  return dec.decode(out.stdout);
}

/** Reads a child's stdout until a line matches `re`; returns the reader's full-text getter. */
export function lineWatcher(child: Deno.ChildProcess): {
  text(): string;
  wait(re: RegExp, ms?: number): Promise<void>;
} {
  let text = "";
  const waiters: Array<() => void> = [];
  (async () => {
    const dec = new TextDecoder();
    for await (const c of child.stdout) {
      text += dec.decode(c, { stream: true });
      for (const w of waiters.splice(0)) w();
    }
  })().catch(() => {});
  return {
    text: () => text,
    async wait(re, ms = 20_000) {
      const deadline = Date.now() + ms;
      while (!re.test(text)) {
        if (Date.now() > deadline) throw new Error(`timed out waiting for ${re}; got: ${text}`);
        await Promise.race([
          new Promise<void>((r) => waiters.push(r)),
          new Promise((r) => setTimeout(r, 100)),
        ]);
      }
    },
  };
}
