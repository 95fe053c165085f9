/**
 * The shim against every containerd line CI installs (1.6 bookworm; 1.7 trixie and 2.1 sid, private
 * installs from scripts/setup_containerd.ts): a representative subset per line — `-info` through
 * `ctr plugins inspect-runtime` (2.x), run with exit status and output, `-t` with a controlling
 * terminal, SIGKILL while the VM boots, exec, kill, delete, events and nothing left behind.
 */
import { deepEqual, doesNotMatch, equal, match, ok } from "node:assert/strict";
import {
  type Containerd,
  CONTAINERD_LINES,
  type ContainerdLine,
  IMAGE,
  importBusyboxImage,
  mountsUnder,
  RUNTIME,
  startContainerd,
} from "../helpers/containerd.ts";
import {
  assertNoLeftovers,
  checkRunOutput,
  ctrEvents,
  runDetached,
  tasks,
  waitStopped,
} from "../helpers/shim_exec_env.ts";
import { type Provider, startPasst } from "../helpers/providers.ts";
import { startGvproxyBinary } from "../helpers/gvproxy_bin.ts";
import { assertSessionLeader, underScript } from "../helpers/tty.ts";
import { EROFS_SNAPSHOTTER } from "../helpers/containerd_erofs.ts";
import { listProcesses } from "../helpers/procs.ts";

const R = ["--runtime", RUNTIME];

for (const line of CONTAINERD_LINES) {
  Deno.test(`containerd ${line}: the nerdbox shim runs, execs, kills and cleans up`, async (t) => {
    await shimSubset(line, t);
  });
}

async function shimSubset(line: ContainerdLine, t: Deno.TestContext): Promise<void> {
  // 2.x also runs the erofs snapshotter (with the private mkfs.erofs of deno task setup)
  const erofs = line.startsWith("2.");
  const ctd = await startContainerd(`nerdbox-shim-v${line.replace(".", "")}`, line, { erofs });
  const events = ctrEvents(ctd);
  const eventsOut = events.text;
  try {
    if (line.startsWith("2.")) {
      await t.step("ctr plugins inspect-runtime shows the shim's RuntimeInfo (-info)", async () => {
        const r = await ctd.ctr(["plugins", "inspect-runtime", ...R]);
        equal(r.code, 0, r.stderr);
        const info = JSON.parse(r.stdout);
        equal(info.Name, RUNTIME);
        ok(info.Version.Version);
        equal(info.Features.ociVersionMin, "1.0.0");
        ok(info.Features.linux.namespaces.includes("network"));
      });
    }
    await importBusyboxImage(ctd);
    if (erofs) await importBusyboxImage(ctd, IMAGE, { snapshotter: EROFS_SNAPSHOTTER });

    await t.step("run: exit status, stdout and stderr", () => checkRunOutput(ctd, "v1"));

    await t.step(
      "run -t: the workload leads a session with the pty as controlling tty",
      async () => {
        // ctr needs a terminal of its own for -t: script(1) gives it one. `sh -i` turns on job
        // control, which complains when there is no controlling terminal.
        const cmd = `${ctd.ctrBin} -a ${ctd.address} run --rm -t ${R.join(" ")} ${IMAGE} vt1 ` +
          `sh -ic 'set -- $(cat /proc/$$/stat); echo S$6:P$$:T$7:E; exit 5'`;
        const o = await underScript(cmd);
        const out = o.out;
        equal(o.code, 5, out);
        assertSessionLeader(out);
        await assertNoLeftovers(ctd, ["vt1"]);
      },
    );

    if (line.startsWith("2.")) {
      for (const snapshotter of [undefined, EROFS_SNAPSHOTTER]) {
        for (
          const [name, start] of [["passt", startPasst], ["gvproxy", startGvproxyBinary]] as const
        ) {
          const sn = snapshotter ? ` and --snapshotter ${snapshotter}` : "";
          await t.step(
            `the seed's command with ${name}${sn}: -t shell with job control, network from the ` +
              "annotation",
            () => seedCommand(ctd, name, start, snapshotter),
          );
        }
      }
    }

    await t.step("SIGKILL while the VM boots ends the task at once with 137", async () => {
      const log = `/run/${ctd.name}/vk1.log`;
      const r = await ctd.ctr(
        ["run", "-d", ...R, "--log-uri", `file://${log}`, IMAGE, "vk1", "sh", "-c", "echo began"],
        { timeoutMs: 60_000 },
      );
      equal(r.code, 0, r.stderr);
      const t0 = Date.now();
      const k = await ctd.ctr(["task", "kill", "-s", "SIGKILL", "vk1"]);
      equal(k.code, 0, k.stderr);
      await waitStopped(ctd, "vk1", 5_000);
      console.log(`containerd ${line}: SIGKILL during boot → STOPPED after ${Date.now() - t0} ms`);
      equal(
        (await Deno.readTextFile(log).catch(() => "")).includes("began"),
        false,
        "the workload never ran",
      );
      equal((await ctd.ctr(["task", "delete", "vk1"])).code, 0);
      equal((await ctd.ctr(["container", "rm", "vk1"])).code, 0);
      await Deno.remove(log).catch(() => {});
      await assertNoLeftovers(ctd, ["vk1"]);
    });

    await t.step("run -d, exec, kill, delete", async () => {
      const log = await runDetached(ctd, "vd1", "echo ready; exec sleep 1000");
      const x = await ctd.ctr([
        "task",
        "exec",
        "--exec-id",
        "e1",
        "vd1",
        "sh",
        "-c",
        "echo x; exit 4",
      ], {
        timeoutMs: 60_000,
      });
      equal(x.stdout, "x\n", x.stderr);
      equal(x.code, 4);
      equal((await tasks(ctd)).vd1[1], "RUNNING");
      const k = await ctd.ctr(["task", "kill", "-s", "SIGKILL", "vd1"]);
      equal(k.code, 0, k.stderr);
      await waitStopped(ctd, "vd1");
      equal((await ctd.ctr(["task", "delete", "vd1"])).code, 0);
      equal((await ctd.ctr(["container", "rm", "vd1"])).code, 0);
      await Deno.remove(log).catch(() => {});
      await assertNoLeftovers(ctd, ["vd1"]);
    });

    await t.step("events: create, start, exit with status, delete", async () => {
      events.kill("SIGTERM");
      const lines = (await eventsOut).split("\n");
      // the init process's events (an exec's exit carries its exec id as "id")
      const ev = (topic: string, id: string) =>
        lines.find((l) =>
          l.includes(` ${topic} `) && l.includes(`"container_id":"${id}"`) &&
          !/"id":"e\d+"/.test(l)
        );
      for (const topic of ["/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"]) {
        ok(ev(topic, "v1"), `${topic} for v1 in:\n${lines.join("\n")}`);
      }
      match(ev("/tasks/exit", "v1")!, /"exit_status":3/);
      match(ev("/tasks/exit", "vk1")!, /"exit_status":137/);
      match(ev("/tasks/exit", "vd1")!, /"exit_status":137/);
      ok(
        lines.some((l) =>
          l.includes("/tasks/exit") && l.includes('"id":"e1"') && /"exit_status":4/.test(l)
        ),
      );
    });
  } finally {
    await events.close();
    await ctd.stop();
  }
}

/** What the host saw of the container's VM while the seed's command ran with erofs layers. */
interface HostView {
  /** The QEMU argv. */
  argv: string[];
  /** Mounts under the container's bundle at that moment. */
  bundleMounts: string[];
}

/** Polls until `done` for the QEMU process whose drives are blobs of `ctd`'s erofs snapshotter. */
async function watchErofsVm(
  ctd: Containerd,
  id: string,
  done: Promise<unknown>,
): Promise<HostView | undefined> {
  const snapshots = `${ctd.root}/io.containerd.snapshotter.v1.erofs/snapshots/`;
  let finished = false;
  done.then(() => finished = true, () => finished = true);
  while (!finished) {
    const vm = (await listProcesses()).find((p) =>
      /qemu-system/.test(p.argv[0]) && p.cmdline.includes(snapshots)
    );
    if (vm) return { argv: vm.argv, bundleMounts: await mountsUnder(ctd.bundleDir(id)) };
    await new Promise((r) => setTimeout(r, 50));
  }
  return undefined;
}

/**
 * The seed's command (`ctr run -t --net-host --cap-add CAP_NET_ADMIN --rm --runtime … --annotation
 * io.containerd.nerdbox.network.0=…`, with `--snapshotter erofs` when given) against the network
 * provider `name`: an interactive shell leading its session, the NIC configured from the
 * annotation; with erofs, the layer blobs are the VM's read-only disks (host: QEMU's drives, no
 * rootfs image, nothing mounted on the bundle; guest: the root's lowers are the layer devices).
 */
async function seedCommand(
  ctd: Containerd,
  name: string,
  start: (name: string) => Promise<Provider>,
  snapshotter?: string,
): Promise<void> {
  const id = `seed-${name}${snapshotter ? `-${snapshotter}` : ""}`;
  const net: Provider = await start(`nbx-${id}`);
  try {
    const mac = "5a:94:ef:e4:0c:ee";
    const ann = `io.containerd.nerdbox.network.0=socket=${net.socket},mode=unixstream,` +
      `mac=${mac},addr=${net.guestIp}/24`;
    const sn = snapshotter ? `--snapshotter ${snapshotter} ` : "";
    const probe = snapshotter
      ? 'grep "^overlay / " /proc/mounts | tr , "\\n" | grep ^lowerdir=; ' +
        "grep . /sys/block/*/serial; "
      : "";
    const cmd = `${ctd.ctrBin} -a ${ctd.address} run -t --net-host --cap-add CAP_NET_ADMIN ` +
      `--rm ${sn}${R.join(" ")} --annotation ${ann} ${IMAGE} ${id} ` +
      `sh -ic 'set -- $(cat /proc/$$/stat); echo S$6:P$$:T$7:E; ip addr; ip route; ${probe}exit 0'`;
    const run = underScript(cmd);
    const host = snapshotter ? watchErofsVm(ctd, id, run) : undefined;
    const o = await run;
    const out = o.out;
    equal(o.code, 0, out);
    assertSessionLeader(out);
    match(out, new RegExp(`link/ether ${mac}`));
    match(out, new RegExp(`inet ${net.guestIp.replaceAll(".", "\\.")}/24`));
    match(out, new RegExp(`default via ${net.gatewayIp.replaceAll(".", "\\.")}`));
    if (host) {
      const view = await host;
      ok(view, "saw the container's QEMU with the erofs snapshotter's blobs as drives");
      const drives = view.argv.filter((a) => a.startsWith("file=")).map((a) => a.split(",")[0]);
      const layers = drives.filter((d) => d.endsWith("/layer.erofs"));
      equal(layers.length, 1, `one image layer as a drive: ${drives.join(" ")}`);
      ok(
        view.argv.some((a) => a.startsWith(`${layers[0]},`) && a.endsWith(",readonly=on")),
        `the layer is read-only: ${view.argv.join(" ")}`,
      );
      ok(!view.argv.some((a) => a.includes("id=rootfs")), "no per-run rootfs image");
      deepEqual(view.bundleMounts, [], "nothing mounted on the bundle's rootfs");
      // the guest: the root stacks the layer device (mounted by init) under the VM's own upper
      match(out, /lowerdir=\/run\/nerdbox\/layers\/0\r*\n/);
      match(out, /\/serial:nerdbox-layer-0\r*\n/);
      doesNotMatch(out, /nerdbox-rootfs/);
    }
  } finally {
    await net.close();
  }
  await assertNoLeftovers(ctd, [id]);
}
