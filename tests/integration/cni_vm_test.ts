/**
 * `nerdbox run --cni` end to end with Debian's CNI plugins and a QEMU guest (TCG): the gVisor
 * "Using CNI" tutorial with a VM instead of runsc. A server in the guest answers the host at the
 * pod IP, the guest's outbound traffic leaves from the pod IP, `-p` goes through portmap, and
 * normal exit, SIGINT and SIGTERM all leave the host as it was. Failures are checked at the CLI.
 */
import assert from "node:assert/strict";
import { createNamedNetns, deleteNamedNetns } from "../../lib/net/netns.ts";
import { makeBusyboxRootfs } from "../helpers/rootfs.ts";
import { assertHostUnchanged, hostSnapshot } from "../helpers/cni_host_snapshot.ts";
import {
  DEBIAN_CNI_BIN,
  freePort,
  holdCniLock,
  outboundIp,
  portmapList,
  requireCniPlugins,
  tempDirWith,
  tutorialBridge,
  tutorialLoopback,
  tutorialNetns,
  waitSigintHandler,
} from "../helpers/cni_fixtures.ts";
import { httpGet, nerdboxRun, oneShotListener, type PodRun, waitFor } from "../helpers/pod_run.ts";
import { writeBundle } from "../helpers/bundle.ts";

/** `nerdbox run --backend qemu --cni` with `conf` and Debian's plugins, more `flags`, then `cmd`. */
function cniRun(conf: string, rootfs: string, flags: string[], cmd: string[]): PodRun {
  return nerdboxRun([
    "--backend",
    "qemu",
    "--cni",
    "--cni-conf-dir",
    conf,
    "--cni-bin-dir",
    DEBIAN_CNI_BIN,
    ...flags,
    rootfs,
    "--",
    ...cmd,
  ]);
}

/**
 * Runs `fn` with a CNI conf dir holding `files` and a busybox rootfs, both removed afterwards; the
 * host's interfaces, routes, rules and netns must then be as before.
 */
async function withCniRun(
  files: Record<string, unknown>,
  fn: (conf: string, rootfs: string) => Promise<void>,
): Promise<void> {
  await requireCniPlugins();
  const before = await hostSnapshot();
  const rootfs = await makeBusyboxRootfs();
  const conf = await tempDirWith(files);
  try {
    await fn(conf, rootfs);
  } finally {
    await Deno.remove(conf, { recursive: true });
    await Deno.remove(rootfs, { recursive: true });
  }
  await assertHostUnchanged(before);
}

const HTTPD =
  "mkdir -p /www && echo served-by-guest > /www/index.html && exec httpd -f -p 80 -h /www";

Deno.test("nerdbox run --cni: tutorial confs, guest egress leaves from the pod IP, exit status, clean host", async () => {
  await withCniRun({
    "10-bridge.conf": tutorialBridge("nbxcnivm1", "nbxcni7", "10.213.7.0/24"),
    "99-loopback.conf": tutorialLoopback(),
  }, async (conf, rootfs) => {
    const ip = await outboundIp();
    const listener = oneShotListener(ip);
    const port = listener.port;
    try {
      const accepted = listener.got;
      const run = cniRun(conf, rootfs, ["--name", "nbxcni-vm1"], [
        "sh",
        "-c",
        `ip -4 -o addr show eth0; echo hello-from-guest | nc ${ip} ${port}; exit 7`,
      ]);
      const { code, output } = await run.done;
      assert.equal(code, 7, output);
      assert.match(output, /eth0\s+inet 10\.213\.7\.2\/24/, "the guest got the pod address");
      const got = await accepted;
      assert.deepEqual(got, { from: "10.213.7.2", text: "hello-from-guest" });
    } finally {
      listener.close();
    }
  });
});

Deno.test("nerdbox run --cni: SIGINT during the CNI setup → attachment undone, 130, clean host", async () => {
  await withCniRun({
    "10-bridge.conf": tutorialBridge("nbxcnivm2", "nbxcni8", "10.213.8.0/24"),
    "99-loopback.conf": tutorialLoopback(),
  }, async (conf, rootfs) => {
    const release = await holdCniLock(); // as if another nerdbox were attaching right now
    let released = false;
    try {
      const run = cniRun(conf, rootfs, ["--name", "nbxcni-vm2"], ["sleep", "600"]);
      await waitSigintHandler(run.child.pid);
      run.child.kill("SIGINT");
      release();
      released = true;
      const { code, output } = await run.done;
      assert.equal(code, 130, output);
      assert.match(output, /interrupted by SIGINT during CNI setup; detaching/);
    } finally {
      if (!released) release();
    }
  });
});

Deno.test("nerdbox run --cni -p: host port → portmap → pod IP → guest; SIGTERM → 143, clean host", async () => {
  await withCniRun({
    "10-pm.conflist": portmapList("nbxcnivm3", "nbxcni9", "10.213.9.0/24"),
  }, async (conf, rootfs) => {
    const hostPort = freePort();
    const ip = await outboundIp();
    const run = cniRun(conf, rootfs, ["-p", `${hostPort}:80`, "--name", "nbxcni-vm3"], [
      "sh",
      "-c",
      HTTPD,
    ]);
    const body = await waitFor(
      `the guest's httpd at ${ip}:${hostPort}`,
      run,
      () => httpGet(`http://${ip}:${hostPort}/`),
    );
    assert.equal(body, "served-by-guest");
    assert.equal(await httpGet(`http://127.0.0.1:${hostPort}/`), "served-by-guest");
    assert.equal(await httpGet("http://10.213.9.2:80/"), "served-by-guest");
    run.child.kill("SIGTERM");
    const { code, output } = await run.done;
    assert.equal(code, 143, output);
  });
});

Deno.test("nerdbox run --cni: missing plugin, failing config and flag misuse are exit 125 with a clear error", async () => {
  await requireCniPlugins();
  const before = await hostSnapshot();
  const missing = portmapList("nbxcnivm4", "nbxcni10", "10.213.10.0/24");
  missing.plugins[0].type = "nbxfake-absent";
  const conf = await tempDirWith({ "10-x.conflist": missing });
  const bad = await tempDirWith({
    "10-bad.conf": { cniVersion: "1.0.0", name: "nbxcnivm5", type: "../bridge" },
  });
  const rootfs = await makeBusyboxRootfs();
  // A real netns: `nerdbox run` checks the --netns path before it looks at --cni.
  const flagNs = await createNamedNetns("nbxcnivm-flag");
  try {
    const cases: [string[], RegExp][] = [
      [
        ["--cni", "--cni-conf-dir", conf, "--cni-bin-dir", DEBIAN_CNI_BIN],
        /failed to find plugin "nbxfake-absent" in path \[\/usr\/lib\/cni\]/,
      ],
      [
        ["--cni", "--cni-conf-dir", bad],
        /CNI config .*10-bad\.conf: type: expected a plugin binary name/,
      ],
      [
        ["--cni", "--cni-conf-dir", conf, "--cni-network", "nope"],
        /no network named "nope" \(found: nbxcnivm4\)/,
      ],
      [["--cni-network", "x"], /--cni-network needs --cni/],
      [
        ["--cni", "--netns", flagNs, "--cni-conf-dir", conf],
        /--cni makes its own network namespace/,
      ],
    ];
    for (const [flags, re] of cases) {
      const { code, output } = await nerdboxRun([
        "--backend",
        "qemu",
        ...flags,
        rootfs,
        "--",
        "true",
      ]).done;
      assert.equal(code, 125, output);
      assert.match(output, re);
    }
  } finally {
    await deleteNamedNetns("nbxcnivm-flag");
    await Deno.remove(conf, { recursive: true });
    await Deno.remove(bad, { recursive: true });
    await Deno.remove(rootfs, { recursive: true });
  }
  await assertHostUnchanged(before);
});

Deno.test("nerdbox run --bundle: config.json names a netns the CNI plugins prepared (the tutorial's runsc flow)", async () => {
  await requireCniPlugins();
  const before = await hostSnapshot();
  const conf = await tempDirWith({
    "10-bridge.conf": tutorialBridge("nbxcnivm6", "nbxcni11", "10.213.11.0/24"),
    "99-loopback.conf": tutorialLoopback(),
  });
  const bundle = await Deno.makeTempDir({ prefix: "nbxcni-bundle-" });
  const state = await Deno.makeTempDir({ prefix: "nbxcni-state-" });
  const ns = "nbxcni-bundle";
  const pod = await tutorialNetns(conf, "nbxcnivm6", ns, state);
  const netns = pod.netns;
  try {
    // the tutorial: ADD bridge as eth0 and loopback as lo, then hand the path to the runtime
    await pod.add();
    await writeBundle(bundle, {
      args: ["sh", "-c", HTTPD],
      hostname: "nbxcni-bundle",
      netns: pod.path,
      rootfs: "busybox",
    });
    const run = nerdboxRun([
      "--backend",
      "qemu",
      "--bundle",
      bundle,
      "-p",
      "80:80",
      "--name",
      "nbxcni-vm6",
    ]);
    try {
      const body = await waitFor(
        "the guest's httpd at 10.213.11.2:80",
        run,
        () => httpGet("http://10.213.11.2:80/"),
      );
      assert.equal(body, "served-by-guest");
    } finally {
      run.child.kill("SIGTERM");
      const { code, output } = await run.done;
      assert.equal(code, 143, output);
    }
    // nerdbox joined the netns but does not own it: it is still there, still attached
    await Deno.stat(netns);
  } finally {
    await pod.teardown();
    for (const d of [conf, bundle, state]) await Deno.remove(d, { recursive: true });
  }
  await assertHostUnchanged(before);
});
