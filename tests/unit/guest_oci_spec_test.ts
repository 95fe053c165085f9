/**
 * The spec crun runs in the guest (guest/oci_runtime.ts guestSpec), the crun files the guest image
 * carries (lib/vm/guest_crun.ts) and the CONFIG field that carries the spec (guest/config.ts).
 */
import assert from "node:assert/strict";
import {
  applyNetSysctls,
  bundleDirFor,
  guestSpec,
  prepareCrunExec,
  rootIsInitramfs,
} from "../../guest/oci_runtime.ts";
import { parseFilesystems } from "../../guest/kernel_filesystems.ts";
import { crunRuntimeFiles } from "../../lib/vm/guest_crun.ts";
import { sharedLibs } from "../../lib/vm/guest_image.ts";
import { ConfigError, parseConfig, parseProcess } from "../../guest/config.ts";
import { parseExecTarget } from "../../guest/pod_containers.ts";

const HOST_SPEC = {
  ociVersion: "1.0.2",
  process: {
    terminal: true,
    args: ["sh"],
    apparmorProfile: "cri-containerd.apparmor.d",
    selinuxLabel: "x",
    capabilities: { bounding: ["CAP_KILL"] },
    noNewPrivileges: true,
  },
  root: { path: "/var/lib/containerd/rootfs", readonly: true },
  hostname: "pod",
  hooks: { prestart: [{ path: "/usr/bin/host-hook" }] },
  annotations: { "io.kubernetes.cri.container-type": "container" },
  mounts: [
    { destination: "/proc", type: "proc", source: "proc" },
    { destination: "/etc/resolv.conf", type: "bind", source: "/var/lib/c/resolv.conf" },
    { destination: "/etc/hostname/", source: "/var/lib/c/hostname", options: ["rbind"] },
    { destination: "/data", type: "none", source: "/host/data", options: ["rbind", "rw"] },
    { destination: "/weird", type: "ext4", source: "/dev/sda1" },
    { destination: "/dev/shm", type: "bind", source: "/run/sandbox/shm", options: ["rbind"] },
  ],
  linux: {
    namespaces: [
      { type: "pid" },
      { type: "network", path: "/proc/77/ns/net" },
      { type: "ipc", path: "/proc/77/ns/ipc" },
      { type: "mount" },
    ],
    mountLabel: "y",
    cgroupsPath: "kubepods-burstable.slice:cri-containerd:abc",
    seccomp: { defaultAction: "SCMP_ACT_ERRNO" },
  },
};

Deno.test("guest spec: root in the guest, no terminal, VM's netns, no host paths or labels", () => {
  const { spec, adjusted } = guestSpec(HOST_SPEC, "/run/nerdbox/root", "workload");
  assert.deepEqual(spec.root, { path: "/run/nerdbox/root", readonly: true });
  const p = spec.process as Record<string, unknown>;
  assert.equal(p.terminal, false);
  assert.equal(p.apparmorProfile, undefined);
  assert.equal(p.selinuxLabel, undefined);
  assert.deepEqual(p.capabilities, { bounding: ["CAP_KILL"] }); // kept for crun
  assert.equal(p.noNewPrivileges, true);
  assert.equal(spec.hooks, undefined);
  assert.equal(spec.annotations, undefined);
  assert.equal(spec.hostname, "pod");
  assert.deepEqual(spec.mounts, [{ destination: "/proc", type: "proc", source: "proc" }]);
  assert.deepEqual(adjusted.droppedMounts, ["/data", "/weird", "/dev/shm"]);
  const l = spec.linux as Record<string, unknown>;
  assert.deepEqual(l.namespaces, [{ type: "pid" }, { type: "ipc" }, { type: "mount" }]);
  assert.equal(l.mountLabel, undefined);
  assert.equal(l.cgroupsPath, "/nerdbox/workload");
  assert.deepEqual(l.seccomp, { defaultAction: "SCMP_ACT_ERRNO" });
  // The host's spec object is not changed.
  assert.equal(HOST_SPEC.process.terminal, true);
  assert.equal(HOST_SPEC.mounts.length, 6);
});

Deno.test("guest spec: net.* sysctls leave crun's spec for the VM's (the pod's) network namespace", () => {
  const spec = {
    ...HOST_SPEC,
    linux: {
      sysctl: {
        "net.ipv4.ip_unprivileged_port_start": "0",
        "kernel.shm_rmid_forced": "1",
        "net.ipv4.ping_group_range": "0 2147483647",
      },
    },
  };
  const { spec: g, adjusted } = guestSpec(spec, "/r", "c1");
  assert.deepEqual((g.linux as Record<string, unknown>).sysctl, { "kernel.shm_rmid_forced": "1" });
  assert.deepEqual(adjusted.netSysctls, {
    "net.ipv4.ip_unprivileged_port_start": "0",
    "net.ipv4.ping_group_range": "0 2147483647",
  });
  assert.deepEqual(guestSpec(HOST_SPEC, "/r", "c1").adjusted.netSysctls, {});
  // containerd 2.x writes 1.2.x specs, which the guest's crun refuses by version alone.
  assert.equal(guestSpec({ ...spec, ociVersion: "1.2.1" }, "/r", "c1").spec.ociVersion, "1.1.0");
  assert.equal(guestSpec({ ...spec, ociVersion: "1.0.2" }, "/r", "c1").spec.ociVersion, "1.0.2");
  // A key that is no sysctl path is refused before anything is written, naming it.
  assert.throws(
    () => applyNetSysctls({ "net.ipv4/../../x": "1" }),
    /sysctl "net.ipv4\/..\/..\/x": expected dot-separated names/,
  );
});

Deno.test("guest spec: mounts of a type the guest kernel lacks are left out, named with the type", () => {
  // libkrunfw's kernel: no POSIX message queues.
  const filesystems = parseFilesystems("nodev\tsysfs\nnodev\ttmpfs\nnodev\tproc\n\text4\n");
  assert.deepEqual([...filesystems].sort(), ["ext4", "proc", "sysfs", "tmpfs"]);
  const spec = {
    ...HOST_SPEC,
    mounts: [
      { destination: "/proc", type: "proc", source: "proc" },
      { destination: "/dev/mqueue", type: "mqueue", source: "mqueue" },
      { destination: "/dev/shm", type: "tmpfs", source: "shm" },
    ],
  };
  const { spec: g, adjusted } = guestSpec(spec, "/r", "c1", { filesystems });
  assert.deepEqual((g.mounts as { destination: string }[]).map((m) => m.destination), [
    "/proc",
    "/dev/shm",
  ]);
  assert.deepEqual(adjusted.unsupportedMounts, ["/dev/mqueue (mqueue)"]);
  assert.deepEqual(adjusted.droppedMounts, []);
  // Unknown kernel: every guest-made mount is kept.
  assert.equal((guestSpec(spec, "/r", "c1").spec.mounts as unknown[]).length, 3);
});

Deno.test("guest spec: a pod's container joins the sandbox's IPC and PID namespaces it names", () => {
  const spec = {
    ...HOST_SPEC,
    linux: {
      namespaces: [
        { type: "pid", path: "/proc/77/ns/pid" },
        { type: "network", path: "/proc/77/ns/net" },
        { type: "ipc", path: "/proc/77/ns/ipc" },
        { type: "uts", path: "/proc/77/ns/uts" },
        { type: "mount" },
      ],
    },
  };
  const ns = (s: Record<string, unknown>) => (s.linux as Record<string, unknown>).namespaces;
  assert.deepEqual(ns(guestSpec(spec, "/r", "c1", { sandboxNs: "/proc/9/ns" }).spec), [
    { type: "pid", path: "/proc/9/ns/pid" },
    { type: "ipc", path: "/proc/9/ns/ipc" },
    { type: "uts" },
    { type: "mount" },
  ]);
  // Without the sandbox's namespaces (the sandbox itself, or unknown): new ones, no host paths.
  assert.deepEqual(ns(guestSpec(spec, "/r", "c1").spec), [
    { type: "pid" },
    { type: "ipc" },
    { type: "uts" },
    { type: "mount" },
  ]);
  // A namespace the host spec asks new (no path) stays new: CRI's per-container PID namespace.
  assert.deepEqual(ns(guestSpec(HOST_SPEC, "/r", "c1", { sandboxNs: "/proc/9/ns" }).spec), [
    { type: "pid" },
    { type: "ipc", path: "/proc/9/ns/ipc" },
    { type: "mount" },
  ]);
});

Deno.test("guest spec: bundles live next to the rootfs mount", () => {
  assert.equal(bundleDirFor("/run/nerdbox/root", "c1"), "/run/nerdbox/bundles/c1");
});

Deno.test("guest image: crun and the libraries Deno does not bring go on the runtime disk", async () => {
  const files = await crunRuntimeFiles(
    () =>
      Promise.resolve([
        ["/lib/x86_64-linux-gnu/libseccomp.so.2", "/host/libseccomp.so.2.5.4"],
        ["/lib/x86_64-linux-gnu/libc.so.6", "/host/libc.so.6"],
      ]),
    new Set(["/lib/x86_64-linux-gnu/libc.so.6"]),
    "/bin/sh", // any host file stands in for crun here; the real one: guest_crun_test.ts
  );
  assert.deepEqual(files, [
    ["bin/crun", await Deno.realPath("/bin/sh")],
    ["lib/libseccomp.so.2", "/host/libseccomp.so.2.5.4"],
  ]);
  assert.deepEqual(await crunRuntimeFiles(sharedLibs, new Set(), "/nonexistent/crun"), []);
});

Deno.test("guest config: oci must be a spec object with a process", () => {
  const base = {
    version: 1,
    hostname: "h",
    rootfs: { kind: "virtiofs", tag: "r" },
    process: { args: ["sh"], env: [], cwd: "/", uid: 0, gid: 0, terminal: false },
    networks: [],
    dhcpTimeoutMs: 1000,
  };
  assert.deepEqual(parseConfig(JSON.stringify({ ...base, oci: { process: {} } })).oci, {
    process: {},
  });
  assert.equal(parseConfig(JSON.stringify(base)).oci, undefined);
  assert.throws(
    () => parseConfig(JSON.stringify({ ...base, oci: [] })),
    /GuestConfig\.oci = \[\]: expected an OCI runtime spec object with a process/,
  );
});

Deno.test("guest spec: crun skips pivot_root only when the guest's root is the initramfs", () => {
  const line = (mp: string, fs: string) => `22 1 0:2 / ${mp} rw shared:1 - ${fs} ${fs} rw`;
  assert.equal(rootIsInitramfs([line("/", "rootfs"), line("/proc", "proc")].join("\n")), true);
  assert.equal(rootIsInitramfs([line("/proc", "proc"), line("/", "virtiofs")].join("\n")), false);
  assert.equal(rootIsInitramfs(line("/", "ext4")), false);
});

Deno.test("exec target: a new container or an existing one, each field checked by name", () => {
  const spec = { process: { args: ["sh"] } };
  const rootfs = { kind: "path", path: "/run/share/c1/rootfs" };
  assert.deepEqual(parseExecTarget({}, "exec[3]."), {});
  assert.deepEqual(parseExecTarget({ in: "web" }, "exec[3]."), { in: "web" });
  assert.deepEqual(parseExecTarget({ guest: true }, "exec[3]."), { guest: true });
  assert.deepEqual(
    parseExecTarget({ container: { id: "c1", spec, rootfs } }, "exec[3]."),
    { container: { id: "c1", spec, rootfs } },
  );
  const bad: Array<[Record<string, unknown>, RegExp]> = [
    [{ in: "../x" }, /exec\[3\]\.in = "\.\.\/x": expected a container id/],
    [{ guest: 1 }, /exec\[3\]\.guest = 1: expected true or absent/],
    [{ guest: true, in: "a" }, /guest = true: expected absent when container or in is given/],
    [{ in: "a", container: {} }, /exec\[3\]\.in = "a": expected absent when container is given/],
    [{ container: { id: "", spec, rootfs } }, /exec\[3\]\.container\.id = ""/],
    [{ container: { id: "c", spec: {}, rootfs } }, /container\.spec = \{\}: expected an OCI spec/],
    [
      { container: { id: "c", spec, rootfs: { kind: "path", path: "/a/../b" } } },
      /container\.rootfs\.path = "\/a\/\.\.\/b": expected an absolute path without \.\./,
    ],
    [{ container: { id: "c", spec, rootfs: { kind: "tar" } } }, /container\.rootfs = /],
  ];
  for (const [v, re] of bad) assert.throws(() => parseExecTarget(v, "exec[3]."), re);
});

Deno.test("exec: supplementary groups reach crun's process file; bad ones are refused by name", async () => {
  const proc = { args: ["id", "-G"], env: [], cwd: "/", uid: 0, gid: 0, terminal: false };
  assert.deepEqual(parseProcess({ ...proc, additionalGids: [1234] }, "exec[3]."), {
    ...proc,
    additionalGids: [1234],
  });
  assert.equal(parseProcess(proc).additionalGids, undefined);
  for (const bad of [5, [-1], ["1"], [1.5], [0xffffffff]]) {
    assert.throws(
      () => parseProcess({ ...proc, additionalGids: bad }, "exec[3]."),
      (e) => e instanceof ConfigError && /exec\[3\]\.additionalGids/.test(e.message),
    );
  }
  // crun exec gets the exec's user with its groups (the container spec's groups are not used).
  const dir = await Deno.makeTempDir({ prefix: "nbx-crun-exec-" });
  try {
    const root = `${dir}/root`;
    Deno.mkdirSync(bundleDirFor(root, "c1"), { recursive: true });
    const spec = { process: { args: ["sleep"], user: { uid: 5, gid: 5, additionalGids: [7] } } };
    const run = prepareCrunExec(spec, root, "c1", 1, { ...proc, uid: 33, additionalGids: [1234] });
    assert.equal(run.pidFile, `${dir}/bundles/c1/exec-1.pid`);
    assert.deepEqual(run.process.args.slice(-6), [
      "exec",
      "--pid-file",
      run.pidFile,
      "--process",
      `${dir}/bundles/c1/exec-1.json`,
      "c1",
    ]);
    const file = JSON.parse(await Deno.readTextFile(`${dir}/bundles/c1/exec-1.json`));
    assert.deepEqual(file.user, { uid: 33, gid: 0, additionalGids: [1234] });
    assert.deepEqual(file.args, ["id", "-G"]);
    prepareCrunExec(spec, root, "c1", 2, proc);
    const plain = JSON.parse(await Deno.readTextFile(`${dir}/bundles/c1/exec-2.json`));
    assert.deepEqual(plain.user, { uid: 0, gid: 0 });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
