/**
 * nerdbox's CNI runner against Debian's real plugins (/usr/lib/cni): the gVisor "Using CNI"
 * tutorial (bridge + host-local + loopback) with a netns nerdbox creates, a portmap mapping,
 * duplicate-ADD refusal, failure paths, interruption and GC — each compared against a snapshot of
 * the host's links, addresses, routes, iptables/nft, netns and forwarding taken before.
 * The VM on top of this: tests/integration/cni_vm_test.ts.
 */
import assert from "node:assert/strict";
import { addNetworkList, checkNetworkList, delNetworkList } from "../../lib/net/cni.ts";
import { pickCniNetwork } from "../../lib/net/cni_config.ts";
import { cleanupHost, recordHostBaseline } from "../../lib/net/cni_host_cleanup.ts";
import { startCniSession } from "../../lib/net/cni_session.ts";
import { createNamedNetns, deleteNamedNetns } from "../../lib/net/netns.ts";
import { diffSnapshots, hostSnapshot } from "../helpers/cni_host_snapshot.ts";
import {
  DEBIAN_CNI_BIN,
  echoServerInNetns,
  freePort,
  holdCniLock,
  portmapList,
  readLine,
  stop,
  tempDirWith,
  tutorialBridge,
  tutorialLoopback,
  waitSigintHandler,
  writeFakePlugin,
} from "../helpers/cni_fixtures.ts";

const driver = new URL("../helpers/cni_session_driver.ts", import.meta.url).pathname;

async function requirePlugins(): Promise<void> {
  for (const p of ["bridge", "host-local", "loopback", "portmap"]) {
    await Deno.stat(`${DEBIAN_CNI_BIN}/${p}`).catch(() => {
      throw new Error(
        `Debian CNI plugin ${DEBIAN_CNI_BIN}/${p} missing: apt-get install containernetworking-plugins`,
      );
    });
  }
}

async function assertHostUnchanged(before: Awaited<ReturnType<typeof hostSnapshot>>) {
  const diff = diffSnapshots(before, await hostSnapshot());
  assert.equal(diff, "", `host state changed:\n${diff}`);
}

async function ipIn(netns: string, args: string[]): Promise<string> {
  const o = await new Deno.Command("ip", { args: ["-n", netns, ...args], stdout: "piped" })
    .output();
  return new TextDecoder().decode(o.stdout);
}

Deno.test("cni runner: the tutorial (bridge + host-local + loopback) with a host→pod server and pod→host source IP", async () => {
  await requirePlugins();
  const before = await hostSnapshot();
  const conf = await tempDirWith({
    "10-bridge.conf": tutorialBridge("nbxcnitut", "nbxcni0", "10.213.0.0/24"),
    "99-loopback.conf": tutorialLoopback(),
  });
  let server: Deno.ChildProcess | undefined;
  try {
    const s = await startCniSession({
      id: "nbxcni-tut",
      confDir: conf,
      binDir: `/opt/cni/bin:${DEBIAN_CNI_BIN}`,
      ports: [],
    });
    try {
      assert.equal(s.netnsPath, "/run/netns/nbx-nbxcni-tut");
      assert.deepEqual(s.podIps, ["10.213.0.2"]);
      assert.equal(s.result.ips[0].gateway, "10.213.0.1");
      const netnsName = s.netnsPath.split("/").pop()!;
      assert.match(await ipIn(netnsName, ["-4", "addr", "show", "eth0"]), /inet 10\.213\.0\.2\/24/);
      assert.match(await ipIn(netnsName, ["link", "show", "lo"]), /<LOOPBACK,UP,LOWER_UP>/);
      assert.match(await ipIn(netnsName, ["route"]), /default via 10\.213\.0\.1 dev eth0/);
      // libcni-format cache entry, and CHECK agrees with the live state
      const entry = JSON.parse(
        await Deno.readTextFile("/var/lib/cni/results/nbxcnitut-nbxcni-tut-eth0"),
      );
      assert.equal(entry.kind, "cniCacheV1");
      assert.equal(entry.netns, s.netnsPath);
      const list = await pickCniNetwork(conf);
      await checkNetworkList(list, {
        containerId: "nbxcni-tut",
        ifName: "eth0",
        netns: s.netnsPath,
      }, {
        binDirs: [DEBIAN_CNI_BIN],
      });

      // host → server in the pod netns at the pod IP (the host's source is the bridge gateway)
      server = await echoServerInNetns(s.netnsPath, 8080);
      assert.equal(await readLine("10.213.0.2", 8080), "hello from 10.213.0.2 to 10.213.0.1");

      // pod → host: a connection from inside the netns leaves with the pod IP
      const hostListener = Deno.listen({ hostname: "10.213.0.1", port: 0 });
      const hostPort = (hostListener.addr as Deno.NetAddr).port;
      const accepted = hostListener.accept();
      const { spawnInNetns } = await import("../../lib/net/netns.ts");
      const client = spawnInNetns(s.netnsPath, "socat", {
        args: ["-u", `TCP:10.213.0.1:${hostPort}`, "STDOUT"],
        stdout: "null",
        stderr: "null",
      });
      const conn = await accepted;
      assert.equal((conn.remoteAddr as Deno.NetAddr).hostname, "10.213.0.2");
      conn.close();
      hostListener.close();
      await client.status;
    } finally {
      if (server) await stop(server);
      await s.teardown();
      await s.teardown(); // idempotent
    }
    await assert.rejects(
      Deno.stat("/var/lib/cni/results/nbxcnitut-nbxcni-tut-eth0"),
      Deno.errors.NotFound,
    );
    await assertHostUnchanged(before);
  } finally {
    await Deno.remove(conf, { recursive: true });
  }
});

Deno.test("cni runner: -p through the portmap plugin reaches the pod; teardown removes the rules and chains", async () => {
  await requirePlugins();
  const before = await hostSnapshot();
  const conf = await tempDirWith({
    "10-pm.conflist": portmapList("nbxcnipm", "nbxcni1", "10.213.1.0/24"),
  });
  const hostPort = freePort();
  let server: Deno.ChildProcess | undefined;
  try {
    const s = await startCniSession({
      id: "nbxcni-pm",
      confDir: conf,
      binDir: DEBIAN_CNI_BIN,
      ports: [{ hostPort, guestPort: 8081, protocol: "tcp" }],
    });
    try {
      server = await echoServerInNetns(s.netnsPath, 8081);
      const nat = new TextDecoder().decode(
        (await new Deno.Command("iptables-save", { args: ["-t", "nat"], stdout: "piped" }).output())
          .stdout,
      );
      assert.match(
        nat,
        new RegExp(`--dport ${hostPort} -j DNAT --to-destination 10\\.213\\.1\\.2:8081`),
      );
      const hostIp = (await new Deno.Command("ip", {
        args: ["-4", "-o", "route", "get", "1.1.1.1"],
        stdout: "piped",
      })
        .output()).stdout;
      const src = /src (\S+)/.exec(new TextDecoder().decode(hostIp))?.[1];
      assert.ok(src, "host has an outbound IPv4 address");
      assert.match(await readLine(src, hostPort), /^hello from 10\.213\.1\.2 to /);
      assert.match(await readLine("127.0.0.1", hostPort), /^hello from 10\.213\.1\.2 to /);
    } finally {
      if (server) await stop(server);
      await s.teardown();
    }
    await assertHostUnchanged(before);
  } finally {
    await Deno.remove(conf, { recursive: true });
  }
});

Deno.test("cni runner: a duplicate ADD is refused and leaves the live attachment intact", async () => {
  await requirePlugins();
  const before = await hostSnapshot();
  const conf = await tempDirWith({
    "10-bridge.conf": tutorialBridge("nbxcnidup", "nbxcni2", "10.213.2.0/24"),
  });
  const ns = "nbxcni-dup";
  const state = await Deno.makeTempDir({ prefix: "nbxcni-state-" });
  const opts = {
    binDirs: [DEBIAN_CNI_BIN],
    cacheDir: await Deno.makeTempDir({ prefix: "nbxcni-cache-" }),
  };
  try {
    const list = await pickCniNetwork(conf);
    await recordHostBaseline(list, state);
    const netns = await createNamedNetns(ns);
    const rt = { containerId: "nbxcni-dup", ifName: "eth0", netns };
    await addNetworkList(list, rt, opts);
    await assert.rejects(
      addNetworkList(list, rt, opts),
      /attachment nbxcnidup\/nbxcni-dup\/eth0 already exists/,
    );
    assert.match(await ipIn(ns, ["-4", "addr", "show", "eth0"]), /inet 10\.213\.2\.2\/24/);
    await checkNetworkList(list, rt, opts);
    await delNetworkList(list, rt, opts);
    // DEL ran while the netns existed, so the ipMasq rules are gone already
    assert.ok(!(await hostSnapshot()).iptables.some((l) => l.includes("nbxcnidup")));
    await deleteNamedNetns(ns);
    // what the plugins leave by design after a correct DEL (the snapshot sees it) …
    const leftover = diffSnapshots(before, await hostSnapshot());
    assert.match(leftover, /\+ nbxcni2: /, "bridge left by the bridge plugin");
    // the bridge plugin turns ip_forward on; where the host had it on already, nothing changes
    if (before.forwarding.includes("ipv4 0")) {
      assert.match(leftover, /\+ ipv4 1/, "ip_forward left at 1 by the bridge plugin");
    } else assert.doesNotMatch(leftover, /ipv4/, "ip_forward was 1 before and stays 1");
    // … and what nerdbox's host cleanup puts back (checked below)
  } finally {
    await deleteNamedNetns(ns);
    assert.deepEqual(await cleanupHost(state), []);
    await Deno.remove(state, { recursive: true });
    await Deno.remove(opts.cacheDir, { recursive: true });
    await Deno.remove(conf, { recursive: true });
  }
  await assertHostUnchanged(before);
});

Deno.test("cni runner: a missing plugin is a clear error before anything is made", async () => {
  await requirePlugins();
  const before = await hostSnapshot();
  const list = portmapList("nbxcnimiss", "nbxcni3", "10.213.3.0/24");
  list.plugins.splice(1, 0, { type: "nbxfake-not-installed" } as never);
  const conf = await tempDirWith({ "10-miss.conflist": list });
  try {
    await assert.rejects(
      startCniSession({ id: "nbxcni-miss", confDir: conf, binDir: DEBIAN_CNI_BIN, ports: [] }),
      /network "nbxcnimiss" \(.*10-miss\.conflist\): failed to find plugin "nbxfake-not-installed" in path \[\/usr\/lib\/cni\]/,
    );
    await assertHostUnchanged(before);
  } finally {
    await Deno.remove(conf, { recursive: true });
  }
});

Deno.test("cni runner: a plugin failing in the middle of the list rolls everything back", async () => {
  await requirePlugins();
  const before = await hostSnapshot();
  const bin = await Deno.makeTempDir({ prefix: "nbxcni-bin-" });
  await writeFakePlugin(bin, "nbxfake-fail", { fail: "test fake: no" });
  const list = portmapList("nbxcnifail", "nbxcni4", "10.213.4.0/24");
  list.plugins.splice(2, 0, { type: "nbxfake-fail" } as never); // bridge, portmap, FAIL, loopback
  const conf = await tempDirWith({ "10-fail.conflist": list });
  try {
    await assert.rejects(
      startCniSession({
        id: "nbxcni-fail",
        confDir: conf,
        binDir: `${bin}:${DEBIAN_CNI_BIN}`,
        ports: [{ hostPort: freePort(), guestPort: 80, protocol: "tcp" }],
      }),
      /ADD failed at network "nbxcnifail" plugins\[2\] \(nbxfake-fail\): .*test fake: no.*rolled back with DEL/,
    );
    await assert.rejects(
      Deno.stat("/var/lib/cni/results/nbxcnifail-nbxcni-fail-eth0"),
      Deno.errors.NotFound,
    );
    await assertHostUnchanged(before);
  } finally {
    await Deno.remove(conf, { recursive: true });
    await Deno.remove(bin, { recursive: true });
  }
});

Deno.test("cni runner: a bad config names the file and field; nothing is made", async () => {
  await requirePlugins();
  const before = await hostSnapshot();
  const conf = await tempDirWith({
    "10-bad.conflist": { cniVersion: "1.1.0", name: "nbxcnibad", plugins: [{ type: "bridge" }] },
  });
  try {
    await assert.rejects(
      startCniSession({ id: "nbxcni-bad", confDir: conf, binDir: DEBIAN_CNI_BIN, ports: [] }),
      /CNI config .*10-bad\.conflist: cniVersion: "1\.1\.0" is not supported/,
    );
    await assertHostUnchanged(before);
  } finally {
    await Deno.remove(conf, { recursive: true });
  }
});

for (const signal of ["SIGINT", "SIGTERM"] as const) {
  Deno.test(`cni runner: ${signal} during a session tears down (exit ${signal === "SIGINT" ? 130 : 143})`, async () => {
    await requirePlugins();
    const before = await hostSnapshot();
    const conf = await tempDirWith({
      "10-pm.conflist": portmapList("nbxcnisig", "nbxcni5", "10.213.5.0/24"),
    });
    try {
      const child = new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          "--quiet",
          driver,
          "nbxcni-sig",
          conf,
          DEBIAN_CNI_BIN,
          `${freePort()}:80`,
        ],
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
      const { value } = await reader.read();
      assert.deepEqual(JSON.parse(value!).podIps, ["10.213.5.2"]);
      child.kill(signal);
      const status = await child.status;
      reader.releaseLock();
      await child.stdout.cancel().catch(() => {});
      await child.stderr.cancel().catch(() => {});
      assert.equal(status.code, signal === "SIGINT" ? 130 : 143);
      await assertHostUnchanged(before);
    } finally {
      await Deno.remove(conf, { recursive: true });
    }
  });
}

Deno.test("cni runner: a SIGKILLed session is DELed by the next session's GC", async () => {
  await requirePlugins();
  const before = await hostSnapshot();
  const conf = await tempDirWith({
    "10-pm.conflist": portmapList("nbxcnigc", "nbxcni6", "10.213.6.0/24"),
  });
  try {
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--quiet", driver, "nbxcni-gc", conf, DEBIAN_CNI_BIN, `${freePort()}:80`],
      stdout: "piped",
      stderr: "null",
    }).spawn();
    const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    await reader.read();
    child.kill("SIGKILL");
    await child.status;
    reader.releaseLock();
    await child.stdout.cancel().catch(() => {});
    assert.ok(
      (await hostSnapshot()).netns.some((l) => l.startsWith("nbx-nbxcni-gc")),
      "leftover to collect",
    );
    const s = await startCniSession({
      id: "nbxcni-gc2",
      confDir: conf,
      binDir: DEBIAN_CNI_BIN,
      ports: [],
    });
    assert.deepEqual(
      s.podIps,
      ["10.213.6.2"],
      "the dead session's address was released by its DEL",
    );
    await s.teardown();
    await assert.rejects(
      Deno.stat("/var/lib/cni/results/nbxcnigc-nbxcni-gc-eth0"),
      Deno.errors.NotFound,
    );
    await assertHostUnchanged(before);
  } finally {
    await Deno.remove(conf, { recursive: true });
  }
});

Deno.test("cni runner: SIGINT during the setup is held, the finished ADD undone, exit 130", async () => {
  await requirePlugins();
  const before = await hostSnapshot();
  const conf = await tempDirWith({
    "10-pm.conflist": portmapList("nbxcnihold", "nbxcni12", "10.213.12.0/24"),
  });
  const release = await holdCniLock(); // the session waits for it inside its setup
  let released = false;
  try {
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        "--quiet",
        driver,
        "nbxcni-hold",
        conf,
        DEBIAN_CNI_BIN,
        `${freePort()}:80`,
      ],
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    await waitSigintHandler(child.pid);
    child.kill("SIGINT");
    release();
    released = true;
    const out = await child.output();
    const stderr = new TextDecoder().decode(out.stderr);
    assert.equal(out.code, 130, stderr);
    assert.match(stderr, /interrupted by SIGINT during CNI setup; detaching/);
    assert.equal(new TextDecoder().decode(out.stdout), "", "the session was never handed out");
    await assertHostUnchanged(before);
  } finally {
    if (!released) release();
    await Deno.remove(conf, { recursive: true });
  }
});

Deno.test("cni runner: two sessions on one network share the bridge; only the last teardown restores the host", async () => {
  await requirePlugins();
  const before = await hostSnapshot();
  const conf = await tempDirWith({
    "10-pm.conflist": portmapList("nbxcnitwo", "nbxcni13", "10.213.13.0/24"),
  });
  try {
    const a = await startCniSession({
      id: "nbxcni-two-a",
      confDir: conf,
      binDir: DEBIAN_CNI_BIN,
      ports: [],
    });
    const b = await startCniSession({
      id: "nbxcni-two-b",
      confDir: conf,
      binDir: DEBIAN_CNI_BIN,
      ports: [{ hostPort: freePort(), guestPort: 80, protocol: "tcp" }],
    });
    try {
      assert.deepEqual([a.podIps, b.podIps], [["10.213.13.2"], ["10.213.13.3"]]);
      await a.teardown();
      const mid = await hostSnapshot();
      assert.ok(mid.links.some((l) => l.startsWith("nbxcni13:")), "b still needs the bridge");
      assert.ok(mid.netns.some((l) => l.startsWith("nbx-nbxcni-two-b")));
      assert.ok(!mid.netns.some((l) => l.startsWith("nbx-nbxcni-two-a")));
      assert.match(mid.forwarding[0], /ipv4 1/);
      assert.ok(
        mid.iptables.some((l) => l.includes("nbxcni-two-b")),
        "b's masquerade rule stays",
      );
      assert.ok(
        !mid.iptables.some((l) => l.includes("nbxcni-two-a")),
        "a's masquerade rule went",
      );
    } finally {
      await a.teardown();
      await b.teardown();
    }
    await assertHostUnchanged(before);
  } finally {
    await Deno.remove(conf, { recursive: true });
  }
});
