/**
 * QEMU backend plumbing: the stage-1 probe boot of the real image (kernel, initramfs, modules,
 * runtime disk, Deno), accelerator resolution on this machine, and bad input failing clearly
 * before any VM starts, leaving nothing behind.
 */
import { equal, match, ok, rejects, throws } from "node:assert/strict";
import { ensureGuestImage } from "../../lib/vm/guest_image.ts";
import { probeBoot, resolveAccel, startQemuVm } from "../../lib/vm/qemu.ts";
import type { VmPlan } from "../../lib/vm/types.ts";
import { planVm } from "../../lib/vm/plan.ts";
import { buildSandboxSpec } from "../../lib/spec/sandbox.ts";
import { parseMac } from "../../lib/spec/mac.ts";
import { checkSocketPath } from "../../lib/spec/socket_path.ts";
import { validateNetnsPath } from "../../lib/net/netns.ts";
import { makeBusyboxRootfs } from "../helpers/rootfs.ts";
import { makeTestNetns } from "../helpers/netns.ts";
import { qemuTestPlan } from "../helpers/qemu_plan.ts";

function plan(rootfs: string, stateDir: string, network: VmPlan["network"]): VmPlan {
  return qemuTestPlan({ id: "nbxq-backend", rootfs, stateDir, args: ["/bin/true"], network });
}

const nullStdio = () => ({
  stdout: new WritableStream<Uint8Array>(),
  stderr: new WritableStream<Uint8Array>(),
});

async function gone(path: string): Promise<boolean> {
  return await Deno.lstat(path).then(() => false, () => true);
}

Deno.test("stage-1 probe boot of the real guest image under TCG reaches Deno and powers off", async () => {
  const image = await ensureGuestImage();
  const r = await probeBoot(image, "tcg", 60_000);
  ok(r.ok, `probe failed; console:\n${r.console}`);
  ok(!/insmod .* failed/.test(r.console), r.console);
});

Deno.test("accel: kvm refused without /dev/kvm, auto falls back to tcg without hanging", async () => {
  const hasKvm = await Deno.stat("/dev/kvm").then(() => true, () => false);
  const image = await ensureGuestImage();
  equal(await resolveAccel("tcg", image), "tcg");
  if (!hasKvm) {
    await rejects(resolveAccel("kvm", image), /--accel kvm: \/dev\/kvm is missing/);
    equal(await resolveAccel("auto", image), "tcg");
  } else {
    ok(["kvm", "tcg"].includes(await resolveAccel("auto", image)));
  }
});

Deno.test("watchdog: a guest that does not start its workload in time is killed, 125 + console", async () => {
  const rootfs = await makeBusyboxRootfs();
  const stateDir = `/run/nbxq-wd-${crypto.randomUUID().slice(0, 8)}`;
  try {
    const h = await startQemuVm(
      plan(rootfs, stateDir, { kind: "nics", nics: [] }),
      nullStdio(),
      { bootTimeoutMs: 1500 },
    );
    const exit = await h.exited;
    await h.dispose();
    equal(exit.code, 125);
    match(exit.error ?? "", /did not start the workload within 1\.5 s \(killed\)/);
    match(exit.error ?? "", /--- console \(.*console\.log\) ---\n/);
    ok(await gone(stateDir));
    let alive = true;
    try {
      Deno.kill(h.pid, "SIGCONT");
    } catch {
      alive = false;
    }
    ok(!alive, "QEMU is gone");
  } finally {
    await Deno.remove(rootfs, { recursive: true });
  }
});

Deno.test("bad networks fail before boot with the field named; nothing is left behind", async () => {
  const rootfs = await makeBusyboxRootfs();
  const ns = await makeTestNetns("nbxqb", { defaultRoute: false });
  try {
    const nic = {
      name: "eth0",
      socket: checkSocketPath("/run/nbxq-no-such-provider.sock", "unixstream"),
      mode: "unixstream" as const,
      mac: parseMac("52:54:00:00:00:01"),
      features: 0,
      vfkit: false,
      vnetHdr: false,
      dhcp: true,
      addrs: [],
      defaultRoute: true,
    };
    const s1 = `/run/nbxq-bad-${crypto.randomUUID().slice(0, 8)}`;
    await rejects(
      startQemuVm(plan(rootfs, s1, { kind: "nics", nics: [nic] }), nullStdio()),
      /network 0: socket "\/run\/nbxq-no-such-provider\.sock": does not exist; start the provider first/,
    );
    ok(await gone(s1), "state dir removed");
    // What QEMU cannot carry, and a netns that is not one, are refused by the plan (nothing
    // built, nothing started).
    const s2 = `/run/nbxq-bad-${crypto.randomUUID().slice(0, 8)}`;
    const sandbox = (netns?: string) =>
      buildSandboxSpec({
        id: "nbxq-bad",
        rootfs,
        process: { args: ["/bin/true"], env: [], cwd: "/", uid: 0, gid: 0, terminal: false },
        ...(netns ? { netns } : {}),
        netFlags: netns
          ? []
          : [`socket=${nic.socket},mode=unixstream,mac=${nic.mac},vnet_hdr=true`],
        publish: [],
      }).spec;
    throws(
      () => planVm(sandbox(), { backend: "qemu", stateDir: s2 }),
      /vnet_hdr="true": QEMU's stream\/dgram netdevs carry plain Ethernet frames/,
    );
    ok(await gone(s2));
    const s4 = `/run/nbxq-bad-${crypto.randomUUID().slice(0, 8)}`;
    await Deno.mkdir(s4);
    await Deno.writeTextFile(`${s4}/ns`, "x");
    throws(
      () =>
        planVm(sandbox(`${s4}/ns`), {
          backend: "qemu",
          stateDir: `${s4}/state`,
          netnsSource: "--netns",
        }),
      /--netns ".*\/ns": is not a namespace file/,
    );
    ok(await gone(`${s4}/state`));
    await Deno.remove(s4, { recursive: true });
    const long = `/run/nbxq-bad-${"x".repeat(100)}`;
    await rejects(
      startQemuVm(plan(rootfs, long, { kind: "tsi", ports: [] }), nullStdio()),
      /state dir: channel socket ".*": 123 bytes; UNIX socket paths hold at most 107/,
    );
    ok(await gone(long));
    // Default network in a netns with no default route: no pod interface to hand to the VM, and
    // (with a port translation, which keeps passt) passt cannot serve either; both said clearly.
    const s3 = `/run/nbxq-bad-${crypto.randomUUID().slice(0, 8)}`;
    await rejects(
      startQemuVm(
        { ...plan(rootfs, s3, { kind: "tsi", ports: [] }), netns: validateNetnsPath(ns.path) },
        nullStdio(),
      ),
      /netns .* has no IPv4 default route via a gateway: the VM takes over the interface/,
    );
    ok(await gone(s3));
    const translated = [{ hostPort: 18081, guestPort: 80, protocol: "tcp" as const }];
    await rejects(
      startQemuVm(
        {
          ...plan(rootfs, s3, { kind: "tsi", ports: translated }),
          netns: validateNetnsPath(ns.path),
        },
        nullStdio(),
      ),
      /passt needs an interface with a default route in netns/,
    );
    ok(await gone(s3));
    const ps = await new Deno.Command("pgrep", { args: ["-f", s3], stdout: "piped" }).output();
    match(new TextDecoder().decode(ps.stdout), /^$/, "no passt or qemu left running");
  } finally {
    await ns.delete();
    await Deno.remove(rootfs, { recursive: true });
  }
});
