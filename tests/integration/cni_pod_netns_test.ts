/**
 * A QEMU guest joining a prepared network namespace without `-p` (what CRI does: it never passes a
 * port list): the VM takes over the pod interface (tc redirect), so any port a server in the guest
 * binds answers at the pod IP — including one above any range passt could forward under this
 * machine's fd limit — and the guest's outbound traffic leaves from the pod IP. The netns is the
 * caller's: it is left exactly as found. A nerdbox killed with SIGKILL leaves no QEMU running, and
 * the next run in the same netns sweeps the dead run's redirect and state dir.
 */
import assert from "node:assert/strict";
import { makeBusyboxRootfs } from "../helpers/rootfs.ts";
import { assertHostUnchanged, hostSnapshot } from "../helpers/cni_host_snapshot.ts";
import {
  outboundIp,
  requireCniPlugins,
  tempDirWith,
  tutorialBridge,
  tutorialLoopback,
  tutorialNetns,
} from "../helpers/cni_fixtures.ts";
import {
  httpGet,
  inNetns,
  makeVethPod,
  nerdboxRun,
  netnsState,
  oneShotListener,
  procsMentioning,
  stateDirOf,
  waitFor,
  waitProcsGone,
} from "../helpers/pod_run.ts";
import { writeBundle } from "../helpers/bundle.ts";

/** A guest script: report the address, send one line out, serve /www on each port (last in front). */
function serveScript(egress: string, ports: number[]): string {
  const bg = ports.slice(0, -1).map((p) => `httpd -p ${p} -h /www && `).join("");
  return `ip -4 -o addr show eth0; echo hello-from-guest | nc ${egress}; ` +
    `mkdir -p /www && echo served-by-guest > /www/index.html && ${bg}` +
    `echo SERVING; exec httpd -f -p ${ports[ports.length - 1]} -h /www`;
}

Deno.test("--bundle naming a CNI-prepared netns, no -p: guest servers answer at the pod IP on any port; egress from the pod IP; netns left as found", async () => {
  await requireCniPlugins(["bridge", "host-local", "loopback"]);
  const before = await hostSnapshot();
  const conf = await tempDirWith({
    "10-bridge.conf": tutorialBridge("nbxpod1", "nbxpodbr1", "10.214.1.0/24"),
    "99-loopback.conf": tutorialLoopback(),
  });
  const bundle = await Deno.makeTempDir({ prefix: "nbxpod-bundle-" });
  const state = await Deno.makeTempDir({ prefix: "nbxpod-state-" });
  const ns = `nbxpod-${crypto.randomUUID().slice(0, 8)}`;
  const pod = await tutorialNetns(conf, "nbxpod1", ns, state);
  const netns = pod.netns;
  const ip = await outboundIp();
  const sink = oneShotListener(ip);
  try {
    await pod.add();
    const nsBefore = await netnsState(netns);
    await writeBundle(bundle, {
      args: ["sh", "-c", serveScript(`${ip} ${sink.port}`, [50051, 8000])],
      hostname: "nbxpod-bundle",
      netns: pod.path,
      rootfs: "busybox",
    });
    const run = nerdboxRun(["--backend", "qemu", "--bundle", bundle, "--name", ns]);
    try {
      const body = await waitFor(
        "the guest's httpd at 10.214.1.2:8000",
        run,
        () => httpGet("http://10.214.1.2:8000/"),
      );
      assert.equal(body, "served-by-guest");
      // A port far above what passt could forward under RLIMIT_NOFILE here (see docs/cni.md).
      assert.equal(await httpGet("http://10.214.1.2:50051/"), "served-by-guest");
      assert.deepEqual(await sink.got, { from: "10.214.1.2", text: "hello-from-guest" });
    } finally {
      run.child.kill("SIGTERM");
      const { code, output } = await run.done;
      assert.equal(code, 143, output);
      assert.match(output, /eth0\s+inet 10\.214\.1\.2\/24/, "the guest has the pod address");
    }
    // The caller's netns: still there, as it was (no tap, no qdisc, no filter left).
    assert.equal(await netnsState(netns), nsBefore);
  } finally {
    sink.close();
    await pod.teardown();
    for (const d of [conf, bundle, state]) await Deno.remove(d, { recursive: true });
  }
  await assertHostUnchanged(before);
});

Deno.test("--netns PATH (no CNI flags): pod IP served, egress from it; SIGKILL of nerdbox → QEMU ends by itself, the next run sweeps the redirect and the state dir", async () => {
  const pod = await makeVethPod("nbxpv", "10.214.2");
  const rootfs = await makeBusyboxRootfs();
  const sink = oneShotListener(pod.hostIp);
  try {
    const nsBefore = await netnsState(pod.path);
    const run = nerdboxRun([
      "--backend",
      "qemu",
      "--netns",
      pod.path,
      rootfs,
      "--",
      "sh",
      "-c",
      serveScript(`${pod.hostIp} ${sink.port}`, [8000]),
    ]);
    let stateDir: string;
    try {
      const body = await waitFor(
        `the guest's httpd at ${pod.podIp}:8000`,
        run,
        () => httpGet(`http://${pod.podIp}:8000/`),
      );
      assert.equal(body, "served-by-guest");
      assert.deepEqual(await sink.got, { from: pod.podIp, text: "hello-from-guest" });
      stateDir = await waitFor("the run's state dir", run, () => stateDirOf(run.child.pid));
      const procs = [...(await procsMentioning(stateDir)).values()];
      assert.ok(procs.some((a) => /qemu-system/.test(a)), `QEMU of the run: ${procs}`);
      assert.ok(!procs.some((a) => /passt/.test(a)), `no passt on the pod interface: ${procs}`);
    } finally {
      run.child.kill("SIGKILL");
      await run.done;
    }
    const ms = await waitProcsGone(stateDir, 30_000);
    console.log(`QEMU of the SIGKILLed run (in a pod netns) gone ${ms} ms after the kill`);
    // Its redirect is still in the netns: nobody was left to undo it.
    assert.match(await inNetns(pod.path, "ip", ["-o", "link", "show"]), /nbxt[0-9a-f]{8}/);
    await Deno.stat(stateDir);
    // The next run in the same netns sweeps it (else eth0's ingress would still be taken).
    const next = await nerdboxRun(["--backend", "qemu", "--netns", pod.path, rootfs, "--", "true"])
      .done;
    assert.equal(next.code, 0, next.output);
    await assert.rejects(Deno.stat(stateDir), Deno.errors.NotFound);
    assert.equal(await netnsState(pod.path), nsBefore);
  } finally {
    sink.close();
    await pod.delete();
    await Deno.remove(rootfs, { recursive: true });
  }
});
