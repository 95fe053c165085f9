/**
 * A real start under libkrun: `nerdbox run --backend libkrun` builds the guest image, spawns the
 * `nerdbox vmm` child, which applies the plan to real libkrun and enters krun_start_enter. Where
 * /dev/kvm cannot run guests (missing, or kvm_pvm on the CI machines) the run must end with 125
 * and a message naming the cause and pointing to --backend qemu; where it can (the nested rig's
 * L1 imports this file: tests/nested/cases/host_tests_l1.ts) the workload runs. Either way nothing
 * is left behind (state dir, socket, child process).
 */
import assert from "node:assert/strict";
import { RUN_STATE_ROOT } from "../../lib/cli/run.ts";
import { NERDBOX, nerdbox, processesMatching, runArgv } from "../helpers/nerdbox_cli.ts";
import { makeBusyboxRootfs } from "../helpers/rootfs.ts";
import { guestKvm as kvm } from "../helpers/kvm_guests.ts";
import { runCommand } from "../helpers/procs.ts";

const NET0 =
  "socket=/run/nb-krun-start/a.sock,mode=unixstream,mac=5a:94:ef:e4:0c:ee,addr=192.168.127.2/24";
const NET1 =
  "socket=/run/nb-krun-start/b.sock,mode=unixgram,mac=02:00:00:00:00:02,dhcp=true,vfkit=true";

async function stateDirsOf(id: string): Promise<string[]> {
  const out: string[] = [];
  try {
    for await (const e of Deno.readDir(RUN_STATE_ROOT)) {
      if (e.name.startsWith(`${id}-`)) out.push(e.name);
    }
  } catch {
    // no state root yet
  }
  return out;
}

async function withRootfs<T>(fn: (rootfs: string, id: string) => Promise<T>): Promise<T> {
  const rootfs = await makeBusyboxRootfs();
  const id = `nb-krun-start-${crypto.randomUUID().slice(0, 8)}`;
  try {
    return await fn(rootfs, id);
  } finally {
    await Deno.remove(rootfs, { recursive: true });
    assert.deepEqual(await stateDirsOf(id), [], "the state dir is removed");
    assert.deepEqual(await processesMatching(`${RUN_STATE_ROOT}/${id}-`), [], "no vmm child left");
  }
}

function assertKvmFailure(r: { code: number; stderr: string }) {
  assert.ok(
    !kvm.usable,
    `this test expects a host where libkrun cannot boot guests; here ${kvm.reason}`,
  );
  assert.equal(r.code, 125, r.stderr);
  assert.match(r.stderr, /--backend qemu/);
  if (kvm.reason.includes("kvm_pvm")) {
    assert.match(
      r.stderr,
      /nerdbox run: the guest kernel died during boot with KVM_EXIT_INTERNAL_ERROR/,
    );
  } else {
    assert.match(r.stderr, /nerdbox run: libkrun cannot run a VM on this host: \/dev\/kvm /);
    // The failure came from krun_start_enter itself, not from a check before it.
    assert.match(r.stderr, /krun_start_enter: "Error creating the Kvm object/);
  }
}

Deno.test("real start under libkrun: runs where /dev/kvm runs guests, else 125 and the cause", () =>
  withRootfs(async (rootfs, id) => {
    const r = await nerdbox(
      runArgv(rootfs, ["/bin/true"], { name: id, backend: "libkrun", flags: ["-p", "18080:80"] }),
    );
    if (kvm.usable) {
      assert.equal(r.code, 0, r.stderr);
      return;
    }
    assertKvmFailure(r);
    assert.doesNotMatch(
      r.stderr,
      /stack backtrace/,
      "libkrun's panic text is not dumped without --log-level",
    );
  }));

Deno.test("real start with --log-level debug: libkrun's log is shown (two networks where KVM fails)", () =>
  withRootfs(async (rootfs, id) => {
    // Where guests boot (L1), the networks' providers would have to exist: libkrun then waits for
    // a missing provider until the boot timeout. So there the run uses TSI and shows the devices.
    const nets = kvm.usable ? [] : ["--net", NET0, "--net", NET1];
    const r = await nerdbox(
      runArgv(rootfs, ["/bin/true"], {
        name: id,
        backend: "libkrun",
        flags: ["--log-level", "debug", ...nets],
      }),
    );
    if (kvm.usable) {
      assert.equal(r.code, 0, r.stderr);
      // libkrun's own debug log, forwarded from the vmm child: the TSI vsock device exists.
      assert.match(r.stderr, /mmio\[vsock\]/);
      assert.doesNotMatch(r.stderr, /mmio\[net\]/, "no NIC under TSI");
      return;
    }
    assertKvmFailure(r);
    // Forwarded from the vmm child: libkrun's own report of the failure.
    assert.match(
      r.stderr,
      kvm.reason.includes("kvm_pvm") ? /KVM_EXIT_INTERNAL_ERROR/ : /panicked at .*vstate\.rs/,
    );
  }));

Deno.test("the vmm child applies every call (two networks) before krun_start_enter", () =>
  withRootfs(async (rootfs, id) => {
    // Stops right before krun_start_enter: reaching it means every call returned success in the child.
    const r = await nerdbox(
      runArgv(rootfs, ["/bin/true"], {
        name: id,
        backend: "libkrun",
        flags: ["--net", NET0, "--net", NET1],
      }),
      { NERDBOX_VMM_STOP_BEFORE_START: "1" },
    );
    assert.equal(r.code, 125);
    assert.match(
      r.stderr,
      /nerdbox run: stopped before krun_start_enter \(NERDBOX_VMM_STOP_BEFORE_START is set\)/,
    );
  }));

Deno.test("failures before the VM: missing libkrun and a bad --netns are 125 with the reason", () =>
  withRootfs(async (rootfs, id) => {
    const r = await nerdbox(
      runArgv(rootfs, ["/bin/true"], {
        name: id,
        backend: "libkrun",
        flags: ["--libkrun", "/nonexistent/nb/libkrun.so.1"],
      }),
    );
    assert.equal(r.code, 125);
    assert.match(
      r.stderr,
      /libkrun not found \(--libkrun names no file\); searched:\n {2}\/nonexistent\/nb\/libkrun\.so\.1/,
    );
    const ns = await nerdbox(
      runArgv(rootfs, ["/bin/true"], {
        name: id,
        backend: "libkrun",
        flags: ["--netns", `/run/netns/${id}`],
      }),
    );
    assert.equal(ns.code, 125);
    assert.match(ns.stderr, new RegExp(`--netns "/run/netns/${id}": does not exist`));
  }));

Deno.test("nerdbox vmm: a bad request is 125 with a nerdbox vmm: line", async () => {
  const dir = await Deno.makeTempDir({ prefix: "nb-krun-vmm-" });
  try {
    await Deno.writeTextFile(`${dir}/req.json`, JSON.stringify({ hello: 1 }));
    const r = await nerdbox(["vmm", `${dir}/req.json`]);
    assert.equal(r.code, 125);
    assert.match(r.stderr, /^nerdbox vmm: cannot read the request: .*not a nerdbox vmm request/m);
    const missing = await nerdbox(["vmm", `${dir}/nope.json`]);
    assert.equal(missing.code, 125);
    assert.match(missing.stderr, /^nerdbox vmm: cannot read the request/m);
    const out = await runCommand(NERDBOX, ["vmm", "-"], {
      stdin: new TextEncoder().encode("not json"),
    });
    assert.equal(out.code, 125);
    assert.match(out.stderr, /^nerdbox vmm: cannot read the request: /m);
    const help = await new Deno.Command(NERDBOX, { args: ["vmm", "--help"], stdout: "piped" })
      .output();
    assert.equal(help.code, 0);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
