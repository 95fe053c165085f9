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
import {
  assertHostUnchanged,
  diffSnapshots,
  type HostSnapshot,
  hostSnapshot,
} from "../helpers/cni_host_snapshot.ts";
import {
  DEBIAN_CNI_BIN,
  echoServerInNetns,
  freePort,
  holdCniLock,
  portmapList,
  readLine,
  requireCniPlugins,
  stop,
  tempDirWith,
  tutorialBridge,
  tutorialLoopback,
  waitSigintHandler,
  writeFakePlugin,
} from "../helpers/cni_fixtures.ts";

const driver = new URL("../helpers/cni_session_driver.ts", import.meta.url).pathname;

async function ipIn(netns: string, args: string[]): Promise<string> {
  const o = await new Deno.Command("ip", { args: ["-n", netns, ...args], stdout: "piped" })
    .output();
  return new TextDecoder().decode(o.stdout);
}

/**
 * One runner case against a fresh config dir made of `files`: the plugins must be installed, the
 * host is snapshotted before, the dir is removed after, and the host must be as it was.
 */
function cniTest(
  name: string,
  files: Record<string, unknown>,
  body: (conf: string, before: HostSnapshot) => Promise<void>,
): void {
  Deno.test(`cni runner: ${name}`, async () => {
    await requireCniPlugins();
    const before = await hostSnapshot();
    const conf = await tempDirWith(files);
    try {
      await body(conf, before);
    } finally {
      await Deno.remove(conf, { recursive: true });
    }
    await assertHostUnchanged(before);
  });
}

/** The session driver (tests/helpers/cni_session_driver.ts) as a child, publishing one port. */
function spawnDriver(id: string, conf: string, stderr: "piped" | "null"): Deno.ChildProcess {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--quiet", driver, id, conf, DEBIAN_CNI_BIN, `${freePort()}:80`],
    stdout: "piped",
    stderr,
  }).spawn();
}

cniTest(
  "the tutorial (bridge + host-local + loopback) with a host→pod server and pod→host source IP",
  {
    "10-bridge.conf": tutorialBridge("nbxcnitut", "nbxcni0", "10.213.0.0/24"),
    "99-loopback.conf": tutorialLoopback(),
  },
  async (conf) => {
    let server: Deno.ChildProcess | undefined;
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
  },
);

cniTest("-p through the portmap plugin reaches the pod; teardown removes the rules and chains", {
  "10-pm.conflist": portmapList("nbxcnipm", "nbxcni1", "10.213.1.0/24"),
}, async (conf) => {
  const hostPort = freePort();
  let server: Deno.ChildProcess | undefined;
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
});

cniTest("a duplicate ADD is refused and leaves the live attachment intact", {
  "10-bridge.conf": tutorialBridge("nbxcnidup", "nbxcni2", "10.213.2.0/24"),
}, async (conf, before) => {
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
    // … and what nerdbox's host cleanup puts back (cniTest checks the host afterwards)
  } finally {
    await deleteNamedNetns(ns);
    assert.deepEqual(await cleanupHost(state), []);
    await Deno.remove(state, { recursive: true });
    await Deno.remove(opts.cacheDir, { recursive: true });
  }
});

/** A conflist whose plugin list has `type` inserted at `at`. */
function withPlugin(list: ReturnType<typeof portmapList>, at: number, type: string) {
  list.plugins.splice(at, 0, { type } as never);
  return list;
}

/** Sessions refused before anything is made: a clear error, no cache entry, the host untouched. */
const REFUSALS = [
  {
    name: "a missing plugin is a clear error before anything is made",
    files: {
      "10-miss.conflist": withPlugin(
        portmapList("nbxcnimiss", "nbxcni3", "10.213.3.0/24"),
        1,
        "nbxfake-not-installed",
      ),
    },
    id: "nbxcni-miss",
    cache: "nbxcnimiss-nbxcni-miss-eth0",
    error:
      /network "nbxcnimiss" \(.*10-miss\.conflist\): failed to find plugin "nbxfake-not-installed" in path \[\/usr\/lib\/cni\]/,
  },
  {
    name: "a plugin failing in the middle of the list rolls everything back",
    // bridge, portmap, FAIL, loopback
    files: {
      "10-fail.conflist": withPlugin(
        portmapList("nbxcnifail", "nbxcni4", "10.213.4.0/24"),
        2,
        "nbxfake-fail",
      ),
    },
    id: "nbxcni-fail",
    cache: "nbxcnifail-nbxcni-fail-eth0",
    fakeFail: true,
    ports: [{ hostPort: freePort(), guestPort: 80, protocol: "tcp" as const }],
    error:
      /ADD failed at network "nbxcnifail" plugins\[2\] \(nbxfake-fail\): .*test fake: no.*rolled back with DEL/,
  },
  {
    name: "a bad config names the file and field; nothing is made",
    files: {
      "10-bad.conflist": { cniVersion: "1.1.0", name: "nbxcnibad", plugins: [{ type: "bridge" }] },
    },
    id: "nbxcni-bad",
    cache: "nbxcnibad-nbxcni-bad-eth0",
    error: /CNI config .*10-bad\.conflist: cniVersion: "1\.1\.0" is not supported/,
  },
];

for (const r of REFUSALS) {
  cniTest(r.name, r.files, async (conf) => {
    const bin = r.fakeFail ? await Deno.makeTempDir({ prefix: "nbxcni-bin-" }) : undefined;
    try {
      if (bin) await writeFakePlugin(bin, "nbxfake-fail", { fail: "test fake: no" });
      await assert.rejects(
        startCniSession({
          id: r.id,
          confDir: conf,
          binDir: bin ? `${bin}:${DEBIAN_CNI_BIN}` : DEBIAN_CNI_BIN,
          ports: r.ports ?? [],
        }),
        r.error,
      );
      await assert.rejects(Deno.stat(`/var/lib/cni/results/${r.cache}`), Deno.errors.NotFound);
    } finally {
      if (bin) await Deno.remove(bin, { recursive: true });
    }
  });
}

for (const signal of ["SIGINT", "SIGTERM"] as const) {
  cniTest(`${signal} during a session tears down (exit ${signal === "SIGINT" ? 130 : 143})`, {
    "10-pm.conflist": portmapList("nbxcnisig", "nbxcni5", "10.213.5.0/24"),
  }, async (conf) => {
    const child = spawnDriver("nbxcni-sig", conf, "piped");
    const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    const { value } = await reader.read();
    assert.deepEqual(JSON.parse(value!).podIps, ["10.213.5.2"]);
    child.kill(signal);
    const status = await child.status;
    reader.releaseLock();
    await child.stdout.cancel().catch(() => {});
    await child.stderr.cancel().catch(() => {});
    assert.equal(status.code, signal === "SIGINT" ? 130 : 143);
  });
}

cniTest("a SIGKILLed session is DELed by the next session's GC", {
  "10-pm.conflist": portmapList("nbxcnigc", "nbxcni6", "10.213.6.0/24"),
}, async (conf) => {
  const child = spawnDriver("nbxcni-gc", conf, "null");
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
});

cniTest("SIGINT during the setup is held, the finished ADD undone, exit 130", {
  "10-pm.conflist": portmapList("nbxcnihold", "nbxcni12", "10.213.12.0/24"),
}, async (conf) => {
  const release = await holdCniLock(); // the session waits for it inside its setup
  let released = false;
  try {
    const child = spawnDriver("nbxcni-hold", conf, "piped");
    await waitSigintHandler(child.pid);
    child.kill("SIGINT");
    release();
    released = true;
    const out = await child.output();
    const stderr = new TextDecoder().decode(out.stderr);
    assert.equal(out.code, 130, stderr);
    assert.match(stderr, /interrupted by SIGINT during CNI setup; detaching/);
    assert.equal(new TextDecoder().decode(out.stdout), "", "the session was never handed out");
  } finally {
    if (!released) release();
  }
});

cniTest("two sessions on one network share the bridge; only the last teardown restores the host", {
  "10-pm.conflist": portmapList("nbxcnitwo", "nbxcni13", "10.213.13.0/24"),
}, async (conf) => {
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
});
