/**
 * VmHandle.exec/resize under the QEMU backend (TCG) through startVm: extra processes run in the
 * real guest next to the sleeping workload — output, exit codes, stdin, a missing binary, signals,
 * a terminal with a resize — and the VM is gone without leftovers afterwards.
 */
import assert from "node:assert/strict";
import { startVm } from "../../lib/vm/launch.ts";
import { GuestExecError } from "../../lib/vm/guest_error.ts";
import type { VmHandle, VmProcess } from "../../lib/vm/types.ts";
import { makeBusyboxRootfs } from "../helpers/rootfs.ts";
import { qemuTestPlan } from "../helpers/qemu_plan.ts";

const enc = new TextEncoder();

/** Collects a stream's text. */
function sink() {
  let text = "";
  let closed = false;
  const dec = new TextDecoder();
  return {
    stream: new WritableStream<Uint8Array>({
      write(c) {
        text += dec.decode(c, { stream: true });
      },
      close() {
        closed = true;
      },
    }),
    text: () => text,
    closed: () => closed,
  };
}

async function run(
  vm: VmHandle,
  args: string[],
  opts: { stdin?: string[]; terminal?: boolean } = {},
): Promise<{ proc: VmProcess; out: ReturnType<typeof sink>; err: ReturnType<typeof sink> }> {
  const out = sink();
  const err = sink();
  const proc = await vm.exec!({
    args,
    env: ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"],
    cwd: "/",
    uid: 0,
    gid: 0,
    terminal: opts.terminal ?? false,
  }, {
    ...(opts.stdin ? { stdin: ReadableStream.from(opts.stdin.map((s) => enc.encode(s))) } : {}),
    stdout: out.stream,
    stderr: err.stream,
    terminal: opts.terminal ?? false,
  });
  return { proc, out, err };
}

Deno.test("qemu: exec into a running guest — output, status, stdin, missing binary, signal, tty", async () => {
  const rootfs = await makeBusyboxRootfs();
  const stateDir = `/run/nbxq-exec-${crypto.randomUUID().slice(0, 8)}`;
  const plan = qemuTestPlan({
    id: "nbxq-exec",
    rootfs,
    stateDir,
    args: ["/bin/sleep", "600"],
    env: ["PATH=/bin"],
    hostname: "nbxq-exec",
  });
  const initOut = sink();
  let vm: VmHandle | undefined;
  try {
    vm = await startVm(plan, { stdout: initOut.stream, stderr: sink().stream });
    assert.equal(typeof vm.exec, "function", "the QEMU handle offers exec");
    assert.equal(typeof vm.resize, "function", "the QEMU handle offers resize");

    // Issued right after start: waits for the guest to come up, then runs next to `sleep`.
    const echo = await run(vm, ["echo", "x"]);
    assert.ok(echo.proc.pid > 1, `guest pid ${echo.proc.pid}`);
    assert.deepEqual(await echo.proc.exited, { code: 0 });
    assert.equal(echo.out.text(), "x\n");
    assert.ok(echo.out.closed() && echo.err.closed());

    const three = await run(vm, ["sh", "-c", "echo out; echo err >&2; hostname; exit 3"]);
    assert.deepEqual(await three.proc.exited, { code: 3 });
    assert.equal(three.out.text(), "out\nnbxq-exec\n");
    assert.equal(three.err.text(), "err\n");

    const cat = await run(vm, ["cat"], { stdin: ["to ", "cat\n"] });
    assert.deepEqual(await cat.proc.exited, { code: 0 });
    assert.equal(cat.out.text(), "to cat\n");

    await assert.rejects(run(vm, ["no-such-binary"]), (e: unknown) => {
      assert.ok(e instanceof GuestExecError, String(e));
      assert.equal(e.code, 127);
      assert.match(
        e.message,
        /could not start the process: .*"no-such-binary".*not found|no such/i,
      );
      return true;
    });

    const sleeper = await run(vm, ["sleep", "300"]);
    // The workload is untouched: its own process listing shows both sleeps.
    const ps = await run(vm, ["sh", "-c", "ps -o args | grep -c 'sleep [36]00$'"]);
    await ps.proc.exited;
    assert.equal(ps.out.text().trim(), "2", "the workload's sleep and the exec'd sleep");
    await sleeper.proc.signal(15);
    assert.deepEqual(await sleeper.proc.exited, { code: 143 });

    // A terminal exec sees the size it was resized to.
    const ttyOut = sink();
    let ctl!: ReadableStreamDefaultController<Uint8Array>;
    const term = await vm.exec!({
      args: ["sh", "-c", "read go; stty size; tty"],
      env: ["PATH=/bin"],
      cwd: "/",
      uid: 0,
      gid: 0,
      terminal: true,
    }, {
      stdin: new ReadableStream({ start: (c) => void (ctl = c) }),
      stdout: ttyOut.stream,
      stderr: sink().stream,
      terminal: true,
    });
    await term.resize!(123, 45);
    ctl.enqueue(enc.encode("go\n"));
    ctl.close();
    assert.deepEqual(await term.exited, { code: 0 });
    assert.match(ttyOut.text(), /45 123\r?\n\/dev\/pts\/\d+/);
    await vm.resize!(80, 24); // the workload has no terminal: accepted, nothing to do

    // The workload itself still ends normally.
    await vm.signal(15);
    const exit = await vm.exited;
    assert.equal(exit.code, 143, exit.error);
    await assert.rejects(run(vm, ["echo", "late"]), /not running/);
  } finally {
    await vm?.dispose();
    await Deno.remove(rootfs, { recursive: true });
  }
  assert.equal(
    await Deno.lstat(stateDir).then(() => true, () => false),
    false,
    "state dir removed",
  );
});
