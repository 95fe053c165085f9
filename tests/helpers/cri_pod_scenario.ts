/**
 * The CRI two-container pod scenario, shared by tests/integration/cri_pod_test.ts (QEMU on this
 * host) and tests/nested/cases/cri_pod_l1.ts (libkrun inside L1): on a private CRI node
 * (tests/helpers/cri_node.ts) a nerdbox pod runs busybox httpd and a client. The client fetches
 * the page from `localhost`; both containers see the pod's hostname and the resolv.conf CRI wrote
 * from the pod's dns_config; a hostPath volume written by both is read on the host; exec, logs,
 * attach and `crictl port-forward` work; removing the pod leaves no VM process, mount, link, qdisc,
 * netns or shim state dir, and stopping the node leaves the host as found.
 */
import assert from "node:assert/strict";
import { containerConfig, type CriNode, podConfig, startCriNode } from "./cri_node.ts";
import { diffHostSnapshots, type HostSnapshot, takeHostSnapshot } from "./host_snapshot.ts";
import { RUN_ROOT } from "../../lib/shim/rundir.ts";
import { waitFor } from "./wait.ts";

/** What the scenario runs with and what it may expect of the backend. */
export interface CriPodScenario {
  /** The pod's io.containerd.nerdbox.backend. */
  backend: "qemu" | "libkrun";
  /** How long a pod or container may take to come up (nested TCG is slow). */
  startMs: number;
  /** Before its containers, the pod must stay ready this long (tells a VM that ends by itself). */
  settleMs?: number;
  /** More annotations for the pod (e.g. its VM's memory). */
  podAnnotations?: Record<string, string>;
}

const ASPECTS = ["processes", "mounts", "netns", "links", "addrs", "routes", "qdiscs"] as const;
const HTTP_PORT = 8080;

/** Processes of a pod: its VMM, network and file helpers, its shim (argv names the node). */
const POD_PROCESS_RE =
  /qemu-system|passt|virtiofsd|gvproxy|krun|containerd-shim|\/run\/nerdbox\/|nbcri-/;

/** `aspect line` for each line a diffHostSnapshots text adds. */
function addedLines(diff: string): string[] {
  let aspect = "";
  const out: string[] = [];
  for (const l of diff.split("\n")) {
    if (/^\w+:$/.test(l)) aspect = l.slice(0, -1);
    else if (l.startsWith("  + ")) out.push(`${aspect} ${l.slice(4)}`);
  }
  return out;
}

/** Entries of the shim's state root (one dir per pod). */
async function shimDirs(): Promise<Set<string>> {
  try {
    return new Set((await Array.fromAsync(Deno.readDir(RUN_ROOT))).map((e) => e.name));
  } catch {
    return new Set();
  }
}

/**
 * Keeps the last text of every VM console log under the shim root while the scenario runs (the
 * shim removes them with the VM), for the failure report.
 */
function keepConsoleLogs(): { seen: Map<string, string>; stop(): Promise<void> } {
  const seen = new Map<string, string>();
  let running = true;
  const loop = (async () => {
    while (running) {
      for (const pod of await shimDirs()) {
        const vms = await Array.fromAsync(Deno.readDir(`${RUN_ROOT}/${pod}`)).catch(() => []);
        for (const vm of vms) {
          const path = `${RUN_ROOT}/${pod}/${vm.name}/console.log`;
          const text = await Deno.readTextFile(path).catch(() => undefined);
          if (text) seen.set(path, text);
        }
      }
      await new Promise((r) => setTimeout(r, 500));
    }
  })();
  return {
    seen,
    stop: () => {
      running = false;
      return loop;
    },
  };
}

/** A TCP port free on the host's loopback right now. */
function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/** Reads `stream` until its text matches `re`, then cancels it; returns the text (throws after `ms`). */
async function readUntil(stream: ReadableStream<Uint8Array>, re: RegExp, ms: number) {
  let text = "";
  const reader = stream.pipeThrough(new TextDecoderStream()).getReader();
  const timer = setTimeout(() => reader.cancel(), ms);
  try {
    while (!re.test(text)) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`stream ended (or timed out) before ${re}:\n${text}`);
      text += value;
    }
    return text;
  } finally {
    clearTimeout(timer);
    await reader.cancel().catch(() => {});
  }
}

/** Runs the scenario on a fresh node; the node is stopped and the host compared at the end. */
export async function runCriPodScenario(s: CriPodScenario): Promise<void> {
  const hostBefore = await takeHostSnapshot({ aspects: [...ASPECTS, "iptables"] });
  const node = await startCriNode();
  const consoles = keepConsoleLogs();
  try {
    await podScenario(node, s);
  } catch (err) {
    const log = await Deno.readTextFile(node.logPath).catch(() => "");
    await consoles.stop();
    console.log(`containerd log (last 80 lines):\n${log.split("\n").slice(-80).join("\n")}`);
    for (const [path, text] of consoles.seen) {
      console.log(`${path} (last 60 lines):\n${text.split("\n").slice(-60).join("\n")}`);
    }
    throw err;
  } finally {
    await consoles.stop();
    await node.stop();
  }
  const left = diffHostSnapshots(
    hostBefore,
    await takeHostSnapshot({ aspects: [...ASPECTS, "iptables"] }),
    { only: new RegExp(`${node.bridge}|nbcri-|${node.subnet.split(".0.0/")[0]}\\.|cni-`) },
  );
  assert.equal(left, "", `the stopped node left this behind:\n${left}`);
}

async function podScenario(node: CriNode, s: CriPodScenario): Promise<void> {
  const token = crypto.randomUUID().slice(0, 8);
  const hostname = `cripod-${token}`;
  const volume = `${node.dir}/volume-${token}`;
  await Deno.mkdir(volume);
  const pod = podConfig(`cripod-${token}`, {
    hostname,
    dns_config: { servers: ["10.96.0.10"], searches: [`${token}.test`], options: ["ndots:3"] },
    annotations: { "io.containerd.nerdbox.backend": s.backend, ...s.podAnnotations },
  });
  const mounts = [{ container_path: "/data", host_path: volume }];
  const shimsBefore = await shimDirs();
  const before = await takeHostSnapshot({ aspects: ASPECTS });

  const podId = await node.runPod(pod, "nerdbox");
  const settled = Date.now() + (s.settleMs ?? 0);
  do {
    const state = JSON.parse(await node.crictlOk(["inspectp", "-o", "json", podId])).status?.state;
    const after = ((Date.now() - settled + (s.settleMs ?? 0)) / 1000).toFixed(0);
    assert.equal(
      state,
      "SANDBOX_READY",
      `the pod sandbox is ${state} ${after} s after RunPodSandbox`,
    );
    if (Date.now() < settled) await new Promise((r) => setTimeout(r, 3000));
  } while (Date.now() < settled);
  const web = await node.createContainer(
    podId,
    containerConfig("web", [
      "sh",
      "-c",
      [
        "mkdir -p /www /data",
        `echo page-${token} > /www/index.html`,
        "hostname > /data/web-hostname",
        "echo web-started",
        `exec httpd -f -p ${HTTP_PORT} -h /www`,
      ].join("; "),
    ], { mounts }),
    pod,
  );
  await node.startContainer(web);
  const client = await node.createContainer(
    podId,
    containerConfig("client", [
      "sh",
      "-c",
      [
        "mkdir -p /data",
        `until wget -q -O /data/client-got http://localhost:${HTTP_PORT}/index.html; do sleep 1; done`,
        "echo client-fetched $(cat /data/client-got)",
        'while read -r l; do echo "got:$l"; done',
      ].join("; "),
    ], { mounts, stdin: true }),
    pod,
  );
  await node.startContainer(client);

  // logs: the client reached the server on localhost (its log line carries the page)
  await waitFor("the client's fetch from localhost", async () => {
    const r = await node.crictl(["logs", client]);
    return r.stdout.includes(`client-fetched page-${token}`) ? true : undefined;
  }, { ms: s.startMs, everyMs: 1000 });
  assert.match(await node.crictlOk(["logs", web]), /^web-started$/m);

  // exec: hostname and resolv.conf in both containers
  for (const id of [web, client]) {
    assert.equal(await node.crictlOk(["exec", id, "hostname"]), hostname, `hostname in ${id}`);
    const resolv = await node.crictlOk(["exec", id, "cat", "/etc/resolv.conf"]);
    assert.match(resolv, /^nameserver 10\.96\.0\.10$/m, `resolv.conf in ${id}:\n${resolv}`);
    assert.match(resolv, new RegExp(`^search ${token}\\.test$`, "m"), `search in ${id}`);
    assert.match(resolv, /^options ndots:3$/m, `options in ${id}`);
  }
  const failing = await node.crictl(["exec", web, "sh", "-c", "echo exec-out; exit 3"]);
  assert.match(failing.stdout, /exec-out/);
  assert.notEqual(failing.code, 0, "a failing exec's status reaches crictl");

  // hostPath: what both containers wrote is on the host
  assert.equal(await Deno.readTextFile(`${volume}/client-got`), `page-${token}\n`);
  assert.equal(await Deno.readTextFile(`${volume}/web-hostname`), `${hostname}\n`);

  // attach: a line on the client's stdin comes back on its stdout
  const attach = node.spawnCrictl(["attach", "-i", client]);
  const attached = readUntil(attach.stdout, /got:attach-/, s.startMs);
  const w = attach.stdin.getWriter();
  await w.write(new TextEncoder().encode(`attach-${token}\n`));
  const attachOut = await attached;
  assert.match(attachOut, new RegExp(`got:attach-${token}`));
  attach.kill("SIGTERM");
  await w.close().catch(() => {});
  await attach.status;
  await attach.stderr.cancel();

  // port-forward: the httpd port fetched from the host
  const port = freePort();
  const pf = node.spawnCrictl(["port-forward", podId, `${port}:${HTTP_PORT}`]);
  try {
    const page = await waitFor("the page through port-forward", async () => {
      const r = await fetch(`http://127.0.0.1:${port}/index.html`);
      return r.ok ? await r.text() : undefined;
    }, { ms: 60_000, everyMs: 1000, retryErrors: true });
    assert.equal(page, `page-${token}\n`);
  } finally {
    pf.kill("SIGTERM");
    await pf.status;
    await pf.stdin.close().catch(() => {});
    await pf.stdout.cancel();
    await pf.stderr.cancel();
  }

  // the pod's own objects while it runs, then nothing of them after removal
  const during = await takeHostSnapshot({ aspects: ASPECTS });
  const podShims = [...await shimDirs()].filter((d) => !shimsBefore.has(d));
  assert.ok(podShims.length > 0, `no shim state dir for the pod appeared under ${RUN_ROOT}`);
  // what appeared with the pod (but the node's bridge, removed by stop, and other people's
  // processes on this shared host) must be gone again after its removal
  const bridgeRe = new RegExp(`^${node.bridge}[:@ ]|dev ${node.bridge}( |$)`);
  const podAdded = (snap: HostSnapshot) =>
    addedLines(diffHostSnapshots(before, snap, { ignore: bridgeRe }))
      .filter((l) => !l.startsWith("processes ") || POD_PROCESS_RE.test(l));
  const podOwn = podAdded(during);
  assert.ok(
    podOwn.some((l) => l.startsWith("processes ")),
    `no process of the pod seen:\n${podOwn.join("\n")}`,
  );
  await node.removePod(podId);
  assert.equal(await node.crictlOk(["pods", "-q"]), "", "crictl still lists a pod");
  const leftNow = async () => {
    const lines = podAdded(await takeHostSnapshot({ aspects: ASPECTS }));
    const dirs = [...await shimDirs()].filter((x) => podShims.includes(x));
    return [...lines, ...dirs.map((x) => `shim state dir ${RUN_ROOT}/${x}`)].join("\n");
  };
  const left = await waitFor("the pod's objects to go", async () => {
    return (await leftNow()) === "" ? "" : undefined;
  }, { ms: 30_000, everyMs: 500 }).catch(leftNow);
  assert.equal(left, "", `removing the pod left this behind:\n${left}`);
}
