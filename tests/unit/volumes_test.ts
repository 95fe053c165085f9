/**
 * Host bind mounts → the VM's volume share: the spec's binds found and rewritten (errors name the
 * mount), the plan's choice per backend, CONFIG's `volumes` parsed, crun's spec keeping only
 * binds from the share; and the share itself against the real virtiofsd (no VM): binds made in
 * the daemon's own mount namespace (never on the host), read-only there, released, and nothing
 * left after stop.
 */
import { deepEqual, equal, match, ok, rejects, throws } from "node:assert/strict";
import {
  checkSources,
  planVolumes,
  specBinds,
  volumeShareBlocker,
} from "../../lib/shim/volumes.ts";
import { bindArgs, checkShareTarget, startVolumeShare } from "../../lib/vm/volumes.ts";
import { GUEST_VOLUMES_DIR } from "../../lib/guest_protocol.ts";
import { parseConfig } from "../../guest/config.ts";
import { guestSpec } from "../../guest/oci_runtime.ts";
import type { VmPlan } from "../../lib/vm/types.ts";

const SPEC = {
  process: { args: ["sh"] },
  mounts: [
    { destination: "/proc", type: "proc", source: "proc", options: ["nosuid"] },
    { destination: "/data", type: "bind", source: "/srv/data", options: ["rbind", "ro"] },
    { destination: "/etc/hosts", type: "bind", source: "/var/x/hosts", options: ["bind"] },
    { destination: "/tmp", type: "tmpfs", source: "tmpfs", options: [] },
    { destination: "/old", type: "none", source: "/srv/old", options: ["rbind", "rw"] },
    { destination: "/dev/shm", type: "bind", source: "/run/x/shm", options: ["rbind"] },
  ],
};

Deno.test("specBinds: every bind found, rewritten into the share; other mounts untouched", () => {
  const { binds, mounts, spec } = specBinds(SPEC, "c1");
  deepEqual(binds, [
    { source: "/srv/data", target: "c1/1", readOnly: true, recursive: true },
    { source: "/var/x/hosts", target: "c1/2", readOnly: false, recursive: false },
    { source: "/srv/old", target: "c1/4", readOnly: false, recursive: true },
  ]);
  deepEqual(mounts.map((m) => m.destination), ["/data", "/etc/hosts", "/old"]);
  const out = spec.mounts as Array<Record<string, unknown>>;
  deepEqual(out[0], SPEC.mounts[0]);
  deepEqual(out[1], {
    destination: "/data",
    type: "bind",
    source: `${GUEST_VOLUMES_DIR}/c1/1`,
    options: ["rbind"], // an rbind's ro is the host's (top mount only)
  });
  equal(out[4].source, `${GUEST_VOLUMES_DIR}/c1/4`);
  equal(out[4].type, "bind");
  deepEqual(out[3], SPEC.mounts[3]);
  deepEqual(out[5], SPEC.mounts[5], "the pod's shm stays the guest's own");
  equal(SPEC.mounts[1].source, "/srv/data", "the input spec is not modified");
});

Deno.test("specBinds: a relative source or a bad id is refused, naming it", () => {
  throws(
    () => specBinds({ mounts: [{ destination: "/d", type: "bind", source: "rel/dir" }] }, "c1"),
    /mounts\[0\]: source="rel\/dir": expected an absolute host path/,
  );
  throws(
    () => specBinds({ mounts: [{ destination: "d", type: "bind", source: "/x" }] }, "c1"),
    /mounts\[0\]: destination="d": expected an absolute path/,
  );
  throws(() => specBinds(SPEC, "../x"), /container id: expected/);
});

Deno.test("checkSources: a missing source names the mount", async () => {
  await rejects(
    checkSources([{ source: "/nonexistent/x", target: "c1/3", readOnly: false, recursive: true }]),
    /mounts\[3\]: source="\/nonexistent\/x": does not exist on the host/,
  );
  await checkSources([{
    source: "/etc/hostname",
    target: "c1/0",
    readOnly: true,
    recursive: false,
  }]);
});

function plan(backend: "qemu" | "libkrun", oci?: Record<string, unknown>): VmPlan {
  return { backend, stateDir: "/run/x/1", ...(oci ? { oci } : {}) } as unknown as VmPlan;
}

Deno.test("planVolumes: QEMU shares; libkrun leaves binds out with a warning; pods always share", async () => {
  const spec = {
    process: {},
    mounts: [{ destination: "/data", type: "bind", source: "/etc", options: ["rbind"] }],
  };
  const warnings: string[] = [];
  const q = plan("qemu");
  await planVolumes(q, spec, "c1", false, (m) => warnings.push(m));
  deepEqual(q.volumes, {
    binds: [{ source: "/etc", target: "c1/0", readOnly: false, recursive: true }],
    mounts: [{ source: "c1/0", destination: "/data", readOnly: false, recursive: true }],
  });
  const withOci = plan("qemu", spec);
  await planVolumes(withOci, spec, "c1", true, (m) => warnings.push(m));
  deepEqual(withOci.volumes?.mounts, [], "crun makes the binds from the rewritten spec");
  equal((withOci.oci!.mounts as Array<{ source: string }>)[0].source, `${GUEST_VOLUMES_DIR}/c1/0`);
  const empty = plan("qemu");
  await planVolumes(empty, { process: {} }, "c2", false, () => {});
  equal(empty.volumes, undefined, "no binds, no share for a plain container");
  const sandbox = plan("qemu", { process: {} });
  await planVolumes(sandbox, { process: {} }, "p1", true, () => {});
  deepEqual(sandbox.volumes, { binds: [], mounts: [] }, "a pod sandbox always gets a share");
  equal(warnings.length, 0, warnings.join("\n"));
  // libkrun serves the share from the VMM itself.
  const k = plan("libkrun");
  await planVolumes(k, spec, "c1", false, (m) => warnings.push(m));
  deepEqual(k.volumes, q.volumes);
  equal(warnings.length, 0, warnings.join("\n"));
  // QEMU without virtiofsd: left out, with a warning naming why and what.
  const none = plan("qemu");
  const why = volumeShareBlocker(plan("qemu"), "/nonexistent/virtiofsd");
  match(why ?? "", /virtiofsd is missing/);
  await planVolumes(none, spec, "c1", false, (m) => warnings.push(m), why);
  equal(none.volumes, undefined);
  match(warnings[0], /left out of the VM \(\/nonexistent\/virtiofsd is missing .*\): \/data/);
});

Deno.test("planVolumes without a share: CRI's resolv.conf bind becomes the VM's DNS settings", async () => {
  const dir = await Deno.makeTempDir({ prefix: "nerdbox-resolv-" });
  try {
    await Deno.writeTextFile(
      `${dir}/resolv.conf`,
      "search ns1.svc.cluster.local cluster.local\nnameserver 10.96.0.10\nnameserver 127.0.0.53\n" +
        "options ndots:5\n",
    );
    const resolv = { destination: "/etc/resolv.conf", type: "bind", source: `${dir}/resolv.conf` };
    const spec = { process: {}, mounts: [{ ...resolv, options: ["rbind", "ro"] }] };
    const noShare = "virtiofsd is missing";
    const k = plan("qemu", spec);
    await planVolumes(k, spec, "p1", true, () => {}, noShare);
    deepEqual(k.dns, {
      nameservers: ["10.96.0.10"],
      search: ["ns1.svc.cluster.local", "cluster.local"],
      options: ["ndots:5"],
    });
    const own = {
      ...plan("qemu", spec),
      dns: { nameservers: ["1.1.1.1"], search: [], options: [] },
    };
    await planVolumes(own, spec, "p1", true, () => {}, noShare);
    deepEqual(own.dns?.nameservers, ["1.1.1.1"], "a plan's own DNS wins");
    const q = plan("qemu", spec);
    await planVolumes(q, spec, "p1", true, () => {});
    equal(q.dns, undefined, "a VM with a share gets the file itself");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("guest CONFIG volumes: parsed; bad fields named", () => {
  const base = {
    version: 1,
    hostname: "h",
    rootfs: { kind: "virtiofs", tag: "rootfs" },
    process: { args: ["sh"], env: [], cwd: "/", uid: 0, gid: 0, terminal: false },
    networks: [],
    dhcpTimeoutMs: 1000,
  };
  const good = {
    tag: "volumes",
    mounts: [{ source: "c1/0", destination: "/data", readOnly: true, recursive: true }],
  };
  const cfg = parseConfig(JSON.stringify({ ...base, volumes: good }));
  deepEqual(cfg.volumes, good);
  const bad = (mounts: unknown[]) => JSON.stringify({ ...base, volumes: { tag: "v", mounts } });
  throws(
    () => parseConfig(bad([{ ...good.mounts[0], source: "../etc" }])),
    /volumes\.mounts\[0\]\.source/,
  );
  throws(
    () => parseConfig(bad([{ ...good.mounts[0], destination: "/a/../b" }])),
    /volumes\.mounts\[0\]\.destination/,
  );
  throws(
    () => parseConfig(bad([{ ...good.mounts[0], readOnly: "yes" }])),
    /volumes\.mounts\[0\]\.readOnly/,
  );
});

Deno.test("crun's spec: binds outside the volume share are left out, others kept", () => {
  const { spec } = specBinds(SPEC, "c1");
  const { spec: g, adjusted } = guestSpec(spec, "/run/nerdbox/root", "c1");
  // Not in a guest: the share is not mounted here, so its sources do not exist → left out.
  deepEqual((g.mounts as Array<{ destination: string }>).map((m) => m.destination), [
    "/proc",
    "/tmp",
  ]);
  deepEqual(adjusted.droppedMounts, ["/data", "/old", "/dev/shm"]);
});

Deno.test("share paths and mount argv", () => {
  equal(checkShareTarget("c1/0"), "c1/0");
  for (const bad of ["../x", "c1/..", "/abs", "c1//0", "c 1/0", ""]) {
    throws(() => checkShareTarget(bad), /volume share path/);
  }
  const a = bindArgs({ source: "/s", target: "c/0", readOnly: true, recursive: true }, "/d", "/ns");
  equal(a[0], "-e");
  deepEqual(a.slice(-5), ["/ns", "/s", "/d", "1", "1"]);
  const b = bindArgs(
    { source: "/s", target: "c/0", readOnly: false, recursive: false },
    "/d",
    "/ns",
  );
  deepEqual(b.slice(-2), ["0", "0"]);
});

function hostMounts(needle: string): string[] {
  return Deno.readTextFileSync("/proc/self/mountinfo").split("\n").filter((l) =>
    l.includes(needle)
  );
}

async function nsRun(pid: number, args: string[]): Promise<{ code: number; out: string }> {
  const o = await new Deno.Command("nsenter", {
    args: ["-t", String(pid), "-m", "--", ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  return { code: o.code, out: new TextDecoder().decode(o.stdout) };
}

Deno.test("volume share (real virtiofsd): binds in its own namespace, released, nothing left", async () => {
  const tmp = await Deno.makeTempDir({ prefix: "nbx-vol-" });
  const state = `${tmp}/state`, src = `${tmp}/src`;
  await Deno.mkdir(`${state}/ctl`, { recursive: true });
  await Deno.mkdir(src);
  await Deno.writeTextFile(`${src}/f.txt`, "host file\n");
  const pids: number[] = [];
  const share = await startVolumeShare(state, `${state}/ctl`, (pid) => void pids.push(pid));
  try {
    equal(pids[0], share.share.pid);
    match(Deno.readTextFileSync(`/proc/${share.share.pid}/cmdline`), /virtiofsd/);
    // A host mount made after the daemon started (below a source) is bound too: the clone is
    // taken in the host's namespace.
    await Deno.mkdir(`${src}/late`);
    const tm = await new Deno.Command("mount", { args: ["-t", "tmpfs", "tmpfs", `${src}/late`] })
      .output();
    ok(tm.success);
    await Deno.writeTextFile(`${src}/late/in-tmpfs`, "late mount\n");
    await share.bind([
      { source: src, target: "c1/0", readOnly: true, recursive: true },
      { source: `${src}/f.txt`, target: "c1/1", readOnly: false, recursive: false },
    ]);
    const dir = share.dir;
    deepEqual(hostMounts(dir), [], "the host's mount table shows none of the binds");
    equal((await nsRun(share.share.pid, ["cat", `${dir}/c1/0/f.txt`])).out, "host file\n");
    equal((await nsRun(share.share.pid, ["cat", `${dir}/c1/1`])).out, "host file\n");
    equal(
      (await nsRun(share.share.pid, ["cat", `${dir}/c1/0/late/in-tmpfs`])).out,
      "late mount\n",
    );
    // ro is the top mount's only (OCI's ro is not recursive): the tmpfs below stays writable.
    const late = await nsRun(share.share.pid, ["sh", "-c", `echo y > ${dir}/c1/0/late/w`]);
    equal(late.code, 0);
    const w = await nsRun(share.share.pid, ["sh", "-c", `echo x > ${dir}/c1/0/new`]);
    ok(w.code !== 0, "the read-only bind refuses writes in the daemon's namespace");
    // A failing batch leaves nothing of itself.
    await rejects(
      share.bind([
        { source: src, target: "c2/0", readOnly: false, recursive: true },
        { source: `${src}/absent`, target: "c2/1", readOnly: false, recursive: true },
      ]),
      /absent.*does not exist/,
    );
    equal(await Deno.lstat(`${dir}/c2`).then(() => true, () => false), false);
    await share.release("c1");
    equal(await Deno.lstat(`${dir}/c1`).then(() => true, () => false), false);
    const left = await nsRun(share.share.pid, ["cat", "/proc/self/mountinfo"]);
    ok(!left.out.includes(dir), left.out);
    await share.release("c1"); // idempotent
    await share.bind([{ source: src, target: "c3/0", readOnly: false, recursive: true }]);
  } finally {
    await share.stop();
    await new Deno.Command("umount", { args: [`${src}/late`] }).output();
  }
  equal(await Deno.lstat(`${state}/volumes`).then(() => true, () => false), false);
  equal(await Deno.lstat(`${state}/ctl/fs1.sock`).then(() => true, () => false), false);
  deepEqual(hostMounts(`${state}`), []);
  equal(await Deno.readTextFile(`${src}/f.txt`), "host file\n", "the source is untouched");
  await Deno.remove(tmp, { recursive: true });
});
