/**
 * The OCI spec applied inside a real QEMU guest by crun (the guest image carries Debian's crun):
 * a dropped capability is gone, a seccomp profile blocks what it lists, noNewPrivileges holds, a
 * readonly rootfs refuses writes, masked and readonly paths, additional groups, hostname, sysctl
 * and rlimits are as the spec says; an exec'd process gets the same confinement. Host bind
 * mounts are left out (logged) until host directories are shared into the VM. In a pod VM, a
 * container that names the sandbox's IPC namespace sees the pod's IPC sysctl, an exec gets its
 * supplementary groups, and the guest kernel can make a Linux bridge. The pod VM reports each
 * container's cgroup counters, tells an OOM kill from a plain SIGKILL, kills a SIGKILLed exec,
 * and its listening ports are mirrored into a netns (CRI port-forward). Update changes a
 * container's cgroup limits through `crun update`; Pids lists the guest pids in its cgroup.
 */
import assert from "node:assert/strict";
import { bootVm } from "../helpers/qemu_vm.ts";
import { makeBusyboxRootfs } from "../helpers/rootfs.ts";
import type { VmHandle } from "../../lib/vm/types.ts";
import type { ExecTarget } from "../../lib/guest_protocol.ts";
import { startInPod, streamRootfsIn } from "../../lib/shim/pod_member.ts";
import { cgroupMetrics } from "../../lib/shim/cgroup_metrics.ts";
import { startPortMirror } from "../../lib/shim/port_forward.ts";
import { makeTestNetns } from "../helpers/netns.ts";
import { LINUX_RESOURCES_TYPE_URL, parseUpdateResources } from "../../lib/shim/task_queries.ts";
import { GuestQueryError } from "../../lib/vm/channel_queries.ts";

/** containerd's default capability set without CAP_CHOWN. */
const CAPS: Record<string, number> = {
  CAP_DAC_OVERRIDE: 1,
  CAP_FOWNER: 3,
  CAP_FSETID: 4,
  CAP_KILL: 5,
  CAP_SETGID: 6,
  CAP_SETUID: 7,
  CAP_SETPCAP: 8,
  CAP_NET_BIND_SERVICE: 10,
  CAP_NET_RAW: 13,
  CAP_SYS_CHROOT: 18,
  CAP_MKNOD: 27,
  CAP_AUDIT_WRITE: 29,
  CAP_SETFCAP: 31,
};
const CAP_MASK = Object.values(CAPS).reduce((m, b) => m | (1n << BigInt(b)), 0n)
  .toString(16).padStart(16, "0");

const SCRIPT = [
  "grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status",
  "echo host=$(hostname) pid=$$",
  "echo shm_rmid_forced=$(cat /proc/sys/kernel/shm_rmid_forced)",
  "echo nofile=$(ulimit -n)",
  "id",
  "touch /rootfs-write 2>&1 || echo rootfs-refused",
  "touch /tmp/f && echo tmp-writable",
  "chown 1:1 /tmp/f 2>&1 || echo chown-refused",
  "mkdir /tmp/d 2>&1 || echo mkdir-refused",
  "echo timer_list=$(wc -c < /proc/timer_list)",
  "(echo 1 > /proc/sys/vm/overcommit_memory) 2>&1 || echo procsys-refused",
  "ls /data 2>&1 || echo no-data",
  "echo crun-ready",
  "sleep 30",
].join("; ");

function spec(): Record<string, unknown> {
  const caps = Object.keys(CAPS);
  return {
    ociVersion: "1.0.2",
    process: {
      terminal: false,
      user: { uid: 0, gid: 0, additionalGids: [4242] },
      args: ["/bin/sh", "-c", SCRIPT],
      env: ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"],
      cwd: "/",
      capabilities: { bounding: caps, effective: caps, permitted: caps },
      noNewPrivileges: true,
      rlimits: [{ type: "RLIMIT_NOFILE", hard: 777, soft: 777 }],
      apparmorProfile: "cri-containerd.apparmor.d",
    },
    root: { path: "rootfs", readonly: true },
    hostname: "crun-box",
    mounts: [
      {
        destination: "/proc",
        type: "proc",
        source: "proc",
        options: ["nosuid", "noexec", "nodev"],
      },
      { destination: "/dev", type: "tmpfs", source: "tmpfs", options: ["nosuid", "mode=755"] },
      {
        destination: "/dev/pts",
        type: "devpts",
        source: "devpts",
        options: ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"],
      },
      { destination: "/dev/shm", type: "tmpfs", source: "shm", options: ["nosuid", "nodev"] },
      { destination: "/dev/mqueue", type: "mqueue", source: "mqueue", options: ["nosuid"] },
      { destination: "/sys", type: "sysfs", source: "sysfs", options: ["nosuid", "ro"] },
      { destination: "/tmp", type: "tmpfs", source: "tmpfs", options: ["nosuid", "nodev"] },
      // Host paths: not in the guest (yet); the guest leaves them out and says so.
      { destination: "/data", type: "bind", source: "/var/lib/nowhere", options: ["rbind"] },
      {
        destination: "/etc/resolv.conf",
        type: "bind",
        source: "/x/resolv.conf",
        options: ["bind"],
      },
    ],
    linux: {
      namespaces: [
        { type: "pid" },
        { type: "ipc" },
        { type: "uts" },
        { type: "mount" },
        { type: "network", path: "/proc/4242/ns/net" },
      ],
      sysctl: { "kernel.shm_rmid_forced": "1" },
      maskedPaths: ["/proc/kcore", "/proc/timer_list"],
      readonlyPaths: ["/proc/sys"],
      seccomp: {
        defaultAction: "SCMP_ACT_ALLOW",
        architectures: ["SCMP_ARCH_X86_64"],
        syscalls: [{ names: ["mkdir", "mkdirat"], action: "SCMP_ACT_ERRNO", errnoRet: 1 }],
      },
      cgroupsPath: "/kubepods/burstable/podX/ctr",
    },
  };
}

/** Starts `args` in the VM (in `target`, with supplementary `groups`); its output and exit. */
async function start(vm: VmHandle, args: string[], target?: ExecTarget, groups?: number[]) {
  let out = "";
  const dec = new TextDecoder();
  const proc = await vm.exec!(
    {
      args,
      env: ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"],
      cwd: "/",
      uid: 0,
      gid: 0,
      ...(groups ? { additionalGids: groups } : {}),
      terminal: false,
    },
    {
      stdout: new WritableStream({ write: (c) => void (out += dec.decode(c, { stream: true })) }),
      stderr: new WritableStream({ write: (c) => void (out += dec.decode(c, { stream: true })) }),
      terminal: false,
    },
    target,
  );
  return { proc, out: () => out };
}

async function execOut(
  vm: VmHandle,
  args: string[],
  target?: ExecTarget,
  groups?: number[],
): Promise<{ code: number; out: string }> {
  const p = await start(vm, args, target, groups);
  const exit = await p.proc.exited;
  return { code: exit.code, out: p.out() };
}

/** A container spec running `sh -c script` with the default capabilities and no seccomp. */
function podSpec(script: string, hostname: string): Record<string, unknown> {
  const s = spec();
  const p = s.process as Record<string, unknown>;
  p.args = ["/bin/sh", "-c", script];
  p.noNewPrivileges = false;
  s.root = { path: "rootfs", readonly: false };
  s.hostname = hostname;
  const l = s.linux as Record<string, unknown>;
  delete l.seccomp;
  return s;
}

/** A pod VM whose sandbox runs `sleep`, the busybox image streamed in, and container "web". */
interface PodWithWeb {
  vm: Awaited<ReturnType<typeof bootVm>>;
  /** The image's lower layer in the VM. */
  lower: string;
  /** Container "web": httpd serving `page` at 127.0.0.1:8080/index.html. */
  web: Awaited<ReturnType<typeof start>>;
}

/**
 * Boots a pod VM (sandbox hostname `box`, `sandbox` adjusting its spec), streams `rootfs` in as
 * image `image` and starts container "web" (hostname `webHost`) serving `page`; waits until it
 * serves. On failure the VM is stopped.
 */
async function bootPodWithWeb(rootfs: string, opts: {
  box: string;
  image: string;
  webHost: string;
  page: string;
  sandbox?: (spec: Record<string, unknown>) => void;
}): Promise<PodWithWeb> {
  const sandbox = podSpec("echo sandbox-up; exec sleep 300", opts.box);
  opts.sandbox?.(sandbox);
  const vm = await bootVm({
    rootfs,
    script: "unused: the OCI spec's process runs",
    network: { kind: "tsi", ports: [] },
    oci: sandbox,
  });
  try {
    await vm.waitStdout(/sandbox-up/);
    const lower = await streamRootfsIn(vm.handle, opts.image, rootfs);
    const webScript = `mkdir -p /www && echo ${opts.page} > /www/index.html && ` +
      "echo web-up && exec httpd -f -p 127.0.0.1:8080 -h /www";
    const web = await start(vm.handle, ["sh", "-c", webScript], {
      container: {
        id: "web",
        spec: podSpec(webScript, opts.webHost),
        rootfs: { kind: "path", path: lower },
      },
    });
    for (let i = 0; i < 100 && !web.out().includes("web-up"); i++) {
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.match(web.out(), /web-up/);
    return { vm, lower, web };
  } catch (err) {
    await vm.handle.signal(9).catch(() => {});
    await vm.done.catch(() => {});
    throw err;
  }
}

Deno.test("crun in the QEMU guest applies the OCI spec: capabilities, seccomp, NNP, readonly root", async () => {
  const dir = await Deno.makeTempDir({ prefix: "nb-crun-" });
  try {
    await makeBusyboxRootfs(`${dir}/rootfs`);
    const vm = await bootVm({
      rootfs: `${dir}/rootfs`,
      script: "unused: the OCI spec's process runs",
      network: { kind: "tsi", ports: [] },
      oci: spec(),
    });
    try {
      await vm.waitStdout(/crun-ready/);
      const out = vm.stdout();
      const line = (re: RegExp) => assert.match(out, re, `${re} in:\n${out}\n${vm.stderr()}`);
      line(new RegExp(`^CapEff:\\s+${CAP_MASK}$`, "m")); // exactly the spec's set: no CAP_CHOWN
      line(/^NoNewPrivs:\s+1$/m);
      line(/^Seccomp:\s+2$/m); // a filter is installed
      line(/^host=crun-box pid=1$/m); // own UTS and PID namespaces
      line(/^shm_rmid_forced=1$/m);
      line(/^nofile=777$/m);
      line(/^uid=0\(root\) gid=0\(root\) groups=.*4242/m);
      line(/Read-only file system\nrootfs-refused/);
      line(/^tmp-writable$/m);
      line(/Operation not permitted\nchown-refused/); // CAP_CHOWN dropped
      line(/Operation not permitted\nmkdir-refused/); // seccomp's ERRNO(1)
      line(/^timer_list=0$/m); // masked
      line(/Read-only file system\nprocsys-refused/); // readonly path
      line(/no-data/); // the host bind mount was left out
      assert.ok(
        vm.logs.some((l) => l.includes("mounts not in the VM's volume share, left out: /data")),
        vm.logs.join("\n"),
      );

      // An exec'd process runs inside the same container, as confined.
      const ex = await execOut(vm.handle, [
        "sh",
        "-c",
        "grep -E '^(CapEff|NoNewPrivs):' /proc/self/status; hostname; ps -o args | grep -c '^[s]leep 30'",
      ]);
      assert.equal(ex.code, 0, ex.out);
      assert.match(ex.out, new RegExp(`^CapEff:\\s+${CAP_MASK}$`, "m"));
      assert.match(ex.out, /^NoNewPrivs:\s+1$/m);
      assert.match(ex.out, /^crun-box$/m);
      assert.match(ex.out, /^1$/m, "the exec sees the workload's PID namespace");
      const st = await execOut(vm.handle, ["sh", "-c", "exit 7"]);
      assert.equal(st.code, 7, "an exec's exit status comes through crun exec");

      // SIGKILL ends the workload (crun and the container with it).
      await vm.handle.signal(9);
      const exit = await vm.done;
      assert.equal(exit.code, 137, JSON.stringify(exit));
    } finally {
      await vm.handle.signal(9).catch(() => {});
      await vm.done.catch(() => {});
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** `spec` asking for its pod sandbox's IPC namespace, as CRI does (a host path). */
function joinSandboxIpc(spec: Record<string, unknown>): Record<string, unknown> {
  const l = spec.linux as Record<string, unknown>;
  l.namespaces = (l.namespaces as Array<{ type: string }>).map((n) =>
    n.type === "ipc" ? { type: "ipc", path: "/proc/4242/ns/ipc" } : n
  );
  return spec;
}

Deno.test("crun in the QEMU guest: a workload crun cannot create ends the VM with crun's error", async () => {
  const dir = await Deno.makeTempDir({ prefix: "nb-crun-fail-" });
  try {
    await makeBusyboxRootfs(`${dir}/rootfs`);
    const broken = spec();
    (broken.mounts as Record<string, unknown>[]).push({
      destination: "/broken",
      type: "tmpfs",
      source: "tmpfs",
      options: ["size=not-a-size"],
    });
    const vm = await bootVm({
      rootfs: `${dir}/rootfs`,
      script: "unused: the OCI spec's process runs",
      network: { kind: "tsi", ports: [] },
      oci: broken,
    });
    const exit = await vm.done;
    assert.notEqual(exit.code, 0);
    assert.doesNotMatch(vm.stdout(), /crun-ready/);
    assert.match(exit.error ?? "", /guest init: exec: crun: .*broken/, JSON.stringify(exit));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("crun in the QEMU guest: containers added to the VM share localhost, not their rootfs", async () => {
  const dir = await Deno.makeTempDir({ prefix: "nb-crun-pod-" });
  try {
    await makeBusyboxRootfs(`${dir}/rootfs`);
    // One image copy in the VM serves as the lower layer of "web" (twice, under the same id).
    const { vm, lower: webLower, web } = await bootPodWithWeb(`${dir}/rootfs`, {
      box: "pod-box",
      image: "web-image",
      webHost: "web-box",
      page: "hello-from-web",
      // A pod sysctl of the IPC namespace (default 10): containers joining that namespace see it.
      sandbox: (spec) => {
        (spec.linux as Record<string, unknown>).sysctl = { "fs.mqueue.msg_max": "100" };
      },
    });
    try {
      const clientScript = "wget -qO- http://127.0.0.1:8080/index.html; " +
        "ls /www 2>/dev/null || echo no-www; hostname; cat /proc/sys/fs/mqueue/msg_max";
      // The shim's way: the host rootfs dir is streamed into the VM, then the container runs there.
      let clientOut = "";
      const dec = new TextDecoder();
      const handle = await startInPod(
        vm.handle,
        "client",
        joinSandboxIpc(podSpec(clientScript, "client-box")),
        `${dir}/rootfs`,
        {
          stdout: new WritableStream({ write: (c) => void (clientOut += dec.decode(c)) }),
          stderr: new WritableStream({ write: (c) => void (clientOut += dec.decode(c)) }),
          terminal: false,
        },
      );
      assert.equal(handle.pid, vm.handle.pid, "a pod container's pid is the pod VMM's");
      const client = { code: (await handle.exited).code, out: clientOut };
      await handle.dispose();
      assert.equal(client.code, 0, client.out);
      assert.equal(
        client.out,
        "hello-from-web\nno-www\nclient-box\n100\n",
        "localhost and the sandbox's IPC namespace (its sysctl) shared, rootfs not",
      );

      // "web" asked for an IPC namespace of its own: the pod's sysctl is not in it.
      const webIpc = await execOut(vm.handle, ["cat", "/proc/sys/fs/mqueue/msg_max"], {
        in: "web",
      });
      assert.deepEqual(webIpc, { code: 0, out: "10\n" });
      // An exec's supplementary groups reach it (crun exec).
      const groups = await execOut(vm.handle, ["id", "-G"], { in: "web" }, [1234, 77]);
      assert.equal(groups.code, 0, groups.out);
      assert.deepEqual(groups.out.trim().split(" ").sort(), ["0", "1234", "77"]);
      // The guest kernel makes Linux bridges (the bridge module is loaded at boot).
      const br = await execOut(vm.handle, [
        "/bin/busybox",
        "sh",
        "-c",
        "/bin/busybox brctl addbr nbxbr0 && /bin/busybox brctl delbr nbxbr0 && echo bridge-ok",
      ], { guest: true });
      assert.deepEqual(br, { code: 0, out: "bridge-ok\n" });

      const inWeb = await execOut(vm.handle, ["cat", "/www/index.html"], { in: "web" });
      assert.deepEqual(inWeb, { code: 0, out: "hello-from-web\n" });
      const none = await execOut(vm.handle, ["true"], { in: "nosuch" }).catch((e: Error) => e);
      assert.ok(
        none instanceof Error,
        `exec in an unknown container must fail: ${JSON.stringify(none)}`,
      );
      assert.match(none.message, /no container nosuch/);

      await web.proc.signal(9);
      assert.equal((await web.proc.exited).code, 137);
      // Its overlay and id were released: the id can be used again, on a fresh rootfs.
      const again = await execOut(vm.handle, ["sh", "-c", "ls /www 2>/dev/null || echo fresh"], {
        container: {
          id: "web",
          spec: podSpec("ls /www 2>/dev/null || echo fresh", "web-box"),
          rootfs: { kind: "path", path: webLower },
        },
      });
      assert.deepEqual(again, { code: 0, out: "fresh\n" });

      // A container crun cannot create (a mount option the kernel refuses): the exit carries
      // crun's own error, not just its status (a CRI sandbox's stdio is discarded).
      const broken = podSpec("echo never", "broken-box");
      (broken.mounts as Record<string, unknown>[]).push({
        destination: "/broken",
        type: "tmpfs",
        source: "tmpfs",
        options: ["size=not-a-size"],
      });
      const bad = await start(vm.handle, ["sh", "-c", "echo never"], {
        container: { id: "broken", spec: broken, rootfs: { kind: "path", path: webLower } },
      });
      const badExit = await bad.proc.exited;
      assert.notEqual(badExit.code, 0);
      assert.doesNotMatch(bad.out(), /never/);
      assert.match(badExit.error ?? "", /exec: crun: .*broken/, JSON.stringify(badExit));
    } finally {
      await vm.handle.signal(9).catch(() => {});
      await vm.done.catch(() => {});
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("pod VM: cgroup stats, an OOM kill told apart, exec SIGKILL, listening ports forwarded", async () => {
  const dir = await Deno.makeTempDir({ prefix: "nb-crun-stats-" });
  const ns = await makeTestNetns("nbxpf");
  try {
    await makeBusyboxRootfs(`${dir}/rootfs`);
    const { vm, lower } = await bootPodWithWeb(`${dir}/rootfs`, {
      box: "stats-box",
      image: "img",
      webHost: "web",
      page: "hello-forwarded",
    });
    try {
      // Stats: the guest's cgroup counters, as containerd's v2 Metrics.
      const stats = await vm.handle.stats!("web");
      assert.ok((stats.single["memory.current"] as number) > 0, JSON.stringify(stats));
      assert.ok(stats.flat["cpu.stat"]?.usage_usec !== undefined, JSON.stringify(stats));
      const m = cgroupMetrics(await vm.handle.stats!());
      assert.ok(m.memory && m.memory.usage > 0n && m.cpu, JSON.stringify(stats));
      assert.ok(m.pids && m.pids.current >= 1n);
      await assert.rejects(vm.handle.stats!("nosuch"), /container nosuch has no cgroup/);

      // An exec that is SIGKILLed (CRI's exec timeout) ends at once, crun's child with it.
      const sleeper = await start(vm.handle, ["sleep", "60"], { in: "web" });
      await new Promise((r) => setTimeout(r, 300));
      await sleeper.proc.signal(9);
      assert.equal((await sleeper.proc.exited).code, 137);
      const left = await execOut(vm.handle, ["sh", "-c", "ps -o args | grep -c '^[s]leep 60'"], {
        in: "web",
      });
      assert.equal(left.out.trim(), "0", "the exec'd sleep is gone");

      // A container over its memory limit is OOM-killed: 137 and the verdict; a plain kill is not.
      const hog = podSpec("dd if=/dev/zero of=/dev/null bs=64M", "hog");
      (hog.linux as Record<string, unknown>).resources = { memory: { limit: 16 * 1024 * 1024 } };
      const oom = await start(vm.handle, ["dd"], {
        container: { id: "hog", spec: hog, rootfs: { kind: "path", path: lower } },
      });
      const oomExit = await oom.proc.exited;
      assert.deepEqual(oomExit, { code: 137, oomKilled: true }, oom.out());
      const killed = await start(vm.handle, ["sleep"], {
        container: {
          id: "killed",
          spec: podSpec("exec sleep 60", "k"),
          rootfs: { kind: "path", path: lower },
        },
      });
      await new Promise((r) => setTimeout(r, 500));
      await killed.proc.signal(9);
      assert.deepEqual(await killed.proc.exited, { code: 137 });

      // Listening ports reach 127.0.0.1 in the pod's netns through the mirror (CRI port-forward).
      assert.ok((await vm.handle.listening!()).includes(8080));
      const mirror = startPortMirror(vm.handle, ns.path, (msg) => console.error(msg));
      try {
        let got = { code: -1, stdout: "", stderr: "" };
        for (let i = 0; i < 50 && got.code !== 0; i++) {
          await new Promise((r) => setTimeout(r, 200));
          got = await ns.run("busybox", ["wget", "-qO-", "http://127.0.0.1:8080/index.html"]);
        }
        assert.equal(got.stdout, "hello-forwarded\n", got.stderr);
        // A port nobody listens on is refused.
        const refused = await ns.run("busybox", ["wget", "-qO-", "http://127.0.0.1:8081/"]);
        assert.notEqual(refused.code, 0);
      } finally {
        mirror.stop();
      }
      const after = await ns.run("busybox", ["wget", "-qO-", "http://127.0.0.1:8080/"]);
      assert.notEqual(after.code, 0, "stopping the mirror closes its listeners");
    } finally {
      await vm.handle.signal(9).catch(() => {});
      await vm.done.catch(() => {});
    }
  } finally {
    await ns.delete();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("pod VM: Update changes a container's cgroup limits (crun update); Pids lists its guest processes", async () => {
  const dir = await Deno.makeTempDir({ prefix: "nb-crun-update-" });
  try {
    await makeBusyboxRootfs(`${dir}/rootfs`);
    const { vm } = await bootPodWithWeb(`${dir}/rootfs`, {
      box: "update-box",
      image: "img",
      webHost: "web",
      page: "hello-update",
    });
    try {
      // The shim's way: a container added by startInPod; its handle's queries name it.
      let out = "";
      const dec = new TextDecoder();
      const script = "sleep 3001 & echo worker-up; wait";
      const worker = await startInPod(
        vm.handle,
        "worker",
        podSpec(script, "worker"),
        `${dir}/rootfs`,
        {
          stdout: new WritableStream({ write: (c) => void (out += dec.decode(c)) }),
          stderr: new WritableStream({ write: (c) => void (out += dec.decode(c)) }),
          terminal: false,
        },
      );
      for (let i = 0; i < 100 && !out.includes("worker-up"); i++) {
        await new Promise((r) => setTimeout(r, 100));
      }
      assert.match(out, /worker-up/);
      assert.equal(worker.crun, true);

      // Update: containerd's Any (OCI LinuxResources JSON) parsed at the edge, applied by crun.
      const resources = parseUpdateResources({
        typeUrl: LINUX_RESOURCES_TYPE_URL,
        value: new TextEncoder().encode(JSON.stringify({
          devices: [{ allow: false, access: "rwm" }],
          memory: { limit: 48 * 1024 * 1024 },
          pids: { limit: 40 },
          cpu: { quota: 50000, period: 100000 },
        })),
      });
      const before = await worker.stats!();
      assert.notEqual(before.single["memory.max"], 48 * 1024 * 1024, JSON.stringify(before));
      await worker.update!(resources);
      const after = await worker.stats!();
      assert.equal(after.single["memory.max"], 48 * 1024 * 1024, JSON.stringify(after));
      assert.equal(after.single["pids.max"], 40, JSON.stringify(after));
      // The cgroup file itself, read in the VM (not in the container).
      const cpuMax = await execOut(vm.handle, [
        "/bin/busybox",
        "cat",
        "/sys/fs/cgroup/nerdbox/worker/cpu.max",
      ], {
        guest: true,
      });
      assert.deepEqual(cpuMax, { code: 0, out: "50000 100000\n" });
      // Another container is untouched.
      assert.notEqual((await vm.handle.stats!("web")).single["memory.max"], 48 * 1024 * 1024);
      // A container the VM does not have, and a value crun/the kernel refuses, are errors.
      await assert.rejects(
        vm.handle.update!({ memory: { limit: 1 << 26 } }, "nosuch"),
        (e: unknown) => e instanceof GuestQueryError && e.reason === "not_found",
      );
      await assert.rejects(
        worker.update!({ cpu: { cpus: "63" } }),
        (e: unknown) =>
          e instanceof GuestQueryError && e.reason === "failed" &&
          /crun update worker/.test(e.message),
      );

      // Pids: guest pids (the VM's pid namespace) of the shell and the sleep it forked.
      const pids = await worker.pids!();
      assert.equal(pids.length, 2, JSON.stringify(pids));
      const comms = await execOut(vm.handle, [
        "/bin/busybox",
        "sh",
        "-c",
        pids.map((p) => `cat /proc/${p}/comm`).join("; "),
      ], { guest: true });
      assert.equal(comms.code, 0, comms.out);
      assert.deepEqual(comms.out.trim().split("\n").sort(), ["sh", "sleep"]);
      const child = await execOut(vm.handle, [
        "/bin/busybox",
        "sh",
        "-c",
        `tr '\\0' ' ' < /proc/${Math.max(...pids)}/cmdline`,
      ], { guest: true });
      assert.equal(child.out.trim(), "sleep 3001", "the forked child is listed");
      // The sandbox's own container: its sleep.
      assert.equal((await vm.handle.pids!()).length, 1);

      await worker.dispose();
      await assert.rejects(
        vm.handle.pids!("worker"),
        (e: unknown) => e instanceof GuestQueryError && e.reason === "not_found",
      );
    } finally {
      await vm.handle.signal(9).catch(() => {});
      await vm.done.catch(() => {});
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
