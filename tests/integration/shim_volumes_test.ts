/**
 * Host bind mounts reach the guest (lib/shim/volumes.ts, lib/vm/volumes.ts): a private containerd
 * 1.6 runs the shim, `ctr run --mount type=bind,…` starts busybox in real QEMU guests. The
 * container reads a host file, a read-only mount refuses writes (even remounted read-write inside
 * the guest: the host side is read-only too), an rw mount's write lands on the host, a single file
 * binds, a missing source is refused at create, and nothing stays mounted or running afterwards.
 * A pod made with CRI's annotations: the sandbox and two later containers of its VM share a host
 * directory, each container's binds are undone when it is deleted, the VM's at the end.
 */
import { deepEqual, equal, match, ok } from "node:assert/strict";
import {
  type Containerd,
  IMAGE,
  importBusyboxImage,
  RUNTIME,
  startContainerd,
} from "../helpers/containerd.ts";
import { socketPath } from "../../lib/shim/address.ts";
import { runDirFor } from "../../lib/shim/rundir.ts";
import { processesWith } from "../helpers/procs.ts";
import { assertSettlesEmpty } from "../helpers/wait.ts";

const R = ["--runtime", RUNTIME];

/** Mount points (host namespace) whose mount point or root mentions `needle`. */
async function hostMountsWith(needle: string): Promise<string[]> {
  const text = await Deno.readTextFile("/proc/self/mountinfo");
  return text.split("\n").filter((l) => l.includes(needle));
}

/** Polls until no mount of `src`, no VM process, no run dir and no bundle is left; asserts it. */
async function assertNothingLeft(
  ctd: Containerd,
  src: string,
  ids: string[],
  group = "nerdbox",
): Promise<void> {
  const socket = await socketPath(ctd.address, "default", group);
  const runDir = runDirFor(socket);
  const problems = async () => {
    const p: string[] = [];
    for (const m of await hostMountsWith(src)) p.push(`host mount left: ${m}`);
    for (const m of await hostMountsWith(runDir)) p.push(`host mount left: ${m}`);
    for (const q of await processesWith(runDir)) p.push(`VM process alive: ${q}`);
    if (await Deno.lstat(runDir).then(() => true, () => false)) p.push(`run dir left: ${runDir}`);
    for (const id of ids) {
      if (await Deno.lstat(ctd.bundleDir(id)).then(() => true, () => false)) {
        p.push(`bundle left: ${id}`);
      }
    }
    return p;
  };
  await assertSettlesEmpty(problems);
}

Deno.test("host bind mounts reach the guest (ctr run --mount)", async (t) => {
  const src = await Deno.makeTempDir({ prefix: "nerdbox-volumes-" });
  const ro = `${src}/ro`, rw = `${src}/rw`, file = `${src}/single.txt`;
  await Deno.mkdir(ro);
  await Deno.mkdir(rw);
  await Deno.writeTextFile(`${ro}/hello.txt`, "hello from the host\n");
  await Deno.writeTextFile(file, "one single file\n");
  const ctd = await startContainerd("nerdbox-volumes-test");
  try {
    await importBusyboxImage(ctd);

    await t.step("ro dir, rw dir and a file bind mount", async () => {
      const script = [
        "cat /data/hello.txt",
        "if echo no > /data/x 2>/dev/null; then echo ro-writable; else echo ro-refused; fi",
        // Even remounted read-write in the guest, the host's side of the bind is read-only.
        "mount -o remount,rw /data 2>/dev/null",
        "if echo no > /data/y 2>/dev/null; then echo host-writable; else echo host-refused; fi",
        "echo written in the guest > /rw/out.txt",
        "cat /etc/single.txt",
        "grep -c ' /data ' /proc/mounts",
      ].join("; ");
      const r = await ctd.ctr(
        [
          "run",
          "--rm",
          ...R,
          "--mount",
          `type=bind,src=${ro},dst=/data,options=rbind:ro`,
          "--mount",
          `type=bind,src=${rw},dst=/rw,options=rbind:rw`,
          "--mount",
          `type=bind,src=${file},dst=/etc/single.txt,options=bind:ro`,
          IMAGE,
          "vol1",
          "sh",
          "-c",
          script,
        ],
        { timeoutMs: 150_000 },
      );
      equal(r.code, 0, r.stderr);
      equal(
        r.stdout,
        "hello from the host\nro-refused\nhost-refused\none single file\n1\n",
        r.stderr,
      );
      equal(await Deno.readTextFile(`${rw}/out.txt`), "written in the guest\n");
      deepEqual([...Deno.readDirSync(ro)].map((e) => e.name), ["hello.txt"]);
      await assertNothingLeft(ctd, src, ["vol1"]);
    });

    await t.step("a detached container: killed and deleted, its binds are gone", async () => {
      const log = `/run/${ctd.name}/vol2.log`;
      const r = await ctd.ctr(
        [
          "run",
          "-d",
          ...R,
          "--log-uri",
          `file://${log}`,
          "--mount",
          `type=bind,src=${rw},dst=/rw,options=rbind:rw`,
          IMAGE,
          "vol2",
          "sh",
          "-c",
          "echo ready > /rw/ready; echo ready; exec sleep 1000",
        ],
        { timeoutMs: 150_000 },
      );
      equal(r.code, 0, r.stderr);
      const deadline = Date.now() + 120_000;
      while (!(await Deno.readTextFile(`${rw}/ready`).catch(() => "")).includes("ready")) {
        ok(Date.now() < deadline, "vol2 never wrote /rw/ready");
        await new Promise((res) => setTimeout(res, 250));
      }
      // While it runs the host's mount table shows none of its binds (they live in virtiofsd's
      // own mount namespace).
      deepEqual(await hostMountsWith(src), []);
      equal((await ctd.ctr(["task", "kill", "-s", "SIGKILL", "vol2"])).code, 0);
      const stopped = Date.now() + 60_000;
      while (!(await ctd.ctr(["task", "ls"])).stdout.match(/vol2\s+\d+\s+STOPPED/)) {
        ok(Date.now() < stopped, "vol2 never stopped");
        await new Promise((res) => setTimeout(res, 250));
      }
      equal((await ctd.ctr(["task", "delete", "vol2"])).code, 0);
      equal((await ctd.ctr(["container", "rm", "vol2"])).code, 0);
      await Deno.remove(log).catch(() => {});
      equal(await Deno.readTextFile(`${rw}/ready`), "ready\n", "the source is untouched");
      await assertNothingLeft(ctd, src, ["vol2"]);
    });

    await t.step("a missing source is refused at create, naming the mount", async () => {
      const r = await ctd.ctr(
        [
          "run",
          "--rm",
          ...R,
          "--mount",
          `type=bind,src=${src}/absent,dst=/data,options=rbind:ro`,
          IMAGE,
          "vol3",
          "true",
        ],
        { timeoutMs: 60_000 },
      );
      ok(r.code !== 0);
      match(r.stderr, /mounts\[\d+\]: source=".*\/absent": does not exist on the host/);
      await ctd.ctr(["container", "rm", "vol3"]);
      await assertNothingLeft(ctd, src, ["vol3"]);
    });

    await t.step("a pod: sandbox and two later containers share a host dir", async () => {
      const pod = await Deno.makeTempDir({ dir: src, prefix: "pod-" });
      const cri = (type: string) => [
        "--annotation",
        `io.kubernetes.cri.container-type=${type}`,
        "--annotation",
        "io.kubernetes.cri.sandbox-id=vpod",
      ];
      const mount = (dst: string, mode: string) => [
        "--mount",
        `type=bind,src=${pod},dst=${dst},options=rbind:${mode}`,
      ];
      const boot = "/proc/sys/kernel/random/boot_id";
      const sb = await ctd.ctr(
        [
          "run",
          "-d",
          ...R,
          ...cri("sandbox"),
          ...mount("/vol", "rw"),
          IMAGE,
          "vpod",
          "sh",
          "-c",
          `cat ${boot} > /vol/boot.sandbox; exec sleep 1000`,
        ],
        { timeoutMs: 150_000 },
      );
      equal(sb.code, 0, sb.stderr);
      const deadline = Date.now() + 120_000;
      while (!(await Deno.readTextFile(`${pod}/boot.sandbox`).catch(() => "")).trim()) {
        ok(Date.now() < deadline, "the sandbox never wrote /vol/boot.sandbox");
        await new Promise((res) => setTimeout(res, 250));
      }
      const c1 = await ctd.ctr(
        [
          "run",
          "--rm",
          ...R,
          ...cri("container"),
          ...mount("/shared", "rw"),
          "--mount",
          `type=bind,src=${file},dst=/etc/single.txt,options=bind:ro`,
          IMAGE,
          "vpc1",
          "sh",
          "-c",
          `cat ${boot} > /shared/boot.c1; echo from-c1 > /shared/note; cat /etc/single.txt`,
        ],
        { timeoutMs: 150_000 },
      );
      equal(c1.code, 0, c1.stderr);
      equal(c1.stdout, "one single file\n");
      const c2 = await ctd.ctr(
        [
          "run",
          "--rm",
          ...R,
          ...cri("container"),
          ...mount("/ro", "ro"),
          IMAGE,
          "vpc2",
          "sh",
          "-c",
          "cat /ro/note; if echo x > /ro/y 2>/dev/null; then echo writable; else echo refused; fi",
        ],
        { timeoutMs: 150_000 },
      );
      equal(c2.code, 0, c2.stderr);
      equal(c2.stdout, "from-c1\nrefused\n");
      equal(
        await Deno.readTextFile(`${pod}/boot.c1`),
        await Deno.readTextFile(`${pod}/boot.sandbox`),
        "c1 ran in the sandbox's VM",
      );
      // The deleted containers' binds are gone from the share; the sandbox's is still there.
      const runDir = runDirFor(await socketPath(ctd.address, "default", "vpod"));
      const vfs = (await processesWith(`${runDir}/`))
        .filter((p) => p.includes("virtiofsd") && p.includes("fs1.sock"));
      equal(vfs.length, 1, `one volume virtiofsd: ${vfs.join("\n")}`);
      const ns = await new Deno.Command("nsenter", {
        args: ["-t", vfs[0].split(":")[0], "-m", "--", "cat", "/proc/self/mountinfo"],
        stdout: "piped",
      }).output();
      const inShare = new TextDecoder().decode(ns.stdout).split("\n")
        .filter((l) => l.includes("/volumes/")).map((l) => l.split(" ")[4]);
      equal(inShare.length, 1, inShare.join("\n"));
      match(inShare[0], /\/volumes\/vpod\/\d+$/);
      deepEqual(await hostMountsWith(src), []);
      equal((await ctd.ctr(["task", "kill", "-s", "SIGKILL", "vpod"])).code, 0);
      const stopped = Date.now() + 60_000;
      while (!(await ctd.ctr(["task", "ls"])).stdout.match(/vpod\s+\d+\s+STOPPED/)) {
        ok(Date.now() < stopped, "the sandbox never stopped");
        await new Promise((res) => setTimeout(res, 250));
      }
      equal((await ctd.ctr(["task", "delete", "vpod"])).code, 0);
      equal((await ctd.ctr(["container", "rm", "vpod"])).code, 0);
      equal(await Deno.lstat(`${pod}/y`).then(() => true, () => false), false);
      await assertNothingLeft(ctd, src, ["vpod", "vpc1", "vpc2"], "vpod");
    });
  } finally {
    await ctd.stop();
    await Deno.remove(src, { recursive: true }).catch(() => {});
  }
});
