/**
 * Fixtures for CNI tests: temp conf dirs, test-fake plugins (shell scripts in a temp bin dir, named
 * `nbxfake-*`), the tutorial's configurations with test-specific bridge names and subnets, and a
 * way to run a server inside a netns.
 */
import { addNetworkList, delNetworkList } from "../../lib/net/cni.ts";
import { pickCniNetwork } from "../../lib/net/cni_config.ts";
import { cleanupHost, recordHostBaseline } from "../../lib/net/cni_host_cleanup.ts";
import { createNamedNetns, deleteNamedNetns, spawnInNetns } from "../../lib/net/netns.ts";
import { killHard } from "../../lib/helper_process.ts";

/** Debian's plugin directory. */
export const DEBIAN_CNI_BIN = "/usr/lib/cni";

/** Makes a temp dir holding the given files (objects are written as JSON). */
export async function tempDirWith(files: Record<string, unknown>): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "nbxcni-" });
  for (const [name, content] of Object.entries(files)) {
    await Deno.writeTextFile(
      `${dir}/${name}`,
      typeof content === "string" ? content : JSON.stringify(content, null, 2),
    );
  }
  return dir;
}

/**
 * Test fake plugin: answers VERSION (0.3.1, 0.4.0, 1.0.0), logs every other call (command, CNI_*
 * and PATH variables, any other variable's name, stdin) to `calls.log` beside itself, and on ADD
 * prints `result` — or fails with a CNI error when `fail` is set.
 */
export async function writeFakePlugin(
  dir: string,
  name: string,
  opts: { result?: unknown; fail?: string } = {},
): Promise<string> {
  const result = JSON.stringify(
    opts.result ?? {
      cniVersion: "1.0.0",
      interfaces: [{ name: name.slice(0, 15) }],
    },
  );
  const failJson = JSON.stringify({ code: 999, msg: opts.fail ?? "" });
  const q = (s: string) => `'${s.replaceAll("'", `'"'"'`)}'`;
  const script = `#!/bin/sh
# test fake CNI plugin (nerdbox tests)
d=$(dirname "$0")
if [ "$CNI_COMMAND" = VERSION ]; then
  cat >/dev/null
  echo '{"cniVersion":"1.0.0","supportedVersions":["0.3.1","0.4.0","1.0.0"]}'
  exit 0
fi
input=$(cat)
{
  echo "=== $CNI_COMMAND $(basename "$0")"
  env | grep -E '^(CNI_[A-Z]+|PATH)=' | sort
  env | grep -vE '^(CNI_[A-Z]+|PATH|PWD|SHLVL|_)=' | sed 's/=.*//' | sed 's/^/OTHER /'
  echo "STDIN $input"
} >> "$d/calls.log"
case "$CNI_COMMAND" in
  ADD)
    ${opts.fail !== undefined ? `echo ${q(failJson)}; exit 1` : `echo ${q(result)}`}
    ;;
esac
exit 0
`;
  const path = `${dir}/${name}`;
  await Deno.writeTextFile(path, script, { mode: 0o755 });
  return path;
}

/** One logged call of a fake plugin. */
export interface FakeCall {
  command: string;
  plugin: string;
  env: Record<string, string>;
  otherEnv: string[];
  stdin: Record<string, unknown>;
}

/** Calls the fakes in `dir` logged so far, in order. */
export async function readFakeCalls(dir: string): Promise<FakeCall[]> {
  let text = "";
  try {
    text = await Deno.readTextFile(`${dir}/calls.log`);
  } catch {
    return [];
  }
  const calls: FakeCall[] = [];
  for (const block of text.split("=== ").slice(1)) {
    const ls = block.split("\n");
    const [command, plugin] = ls[0].split(" ");
    const env: Record<string, string> = {};
    const otherEnv: string[] = [];
    let stdin: Record<string, unknown> = {};
    for (const l of ls.slice(1)) {
      if (l.startsWith("STDIN ")) stdin = JSON.parse(l.slice(6));
      else if (l.startsWith("OTHER ")) otherEnv.push(l.slice(6));
      else if (l.includes("=")) env[l.slice(0, l.indexOf("="))] = l.slice(l.indexOf("=") + 1);
    }
    calls.push({ command, plugin, env, otherEnv, stdin });
  }
  return calls;
}

/** The tutorial's bridge config (cniVersion 1.0.0) on a test bridge and subnet. */
export function tutorialBridge(name: string, bridge: string, subnet: string) {
  return {
    cniVersion: "1.0.0",
    name,
    type: "bridge",
    bridge,
    isGateway: true,
    ipMasq: true,
    ipam: { type: "host-local", subnet, routes: [{ dst: "0.0.0.0/0" }] },
  };
}

/** The tutorial's loopback config. */
export function tutorialLoopback() {
  return { cniVersion: "1.0.0", name: "lo", type: "loopback" };
}

/** A bridge + portmap + loopback list on a test bridge and subnet. */
export function portmapList(name: string, bridge: string, subnet: string) {
  return {
    cniVersion: "1.0.0",
    name,
    plugins: [
      {
        type: "bridge",
        bridge,
        isGateway: true,
        ipMasq: true,
        hairpinMode: true,
        ipam: { type: "host-local", ranges: [[{ subnet }]], routes: [{ dst: "0.0.0.0/0" }] },
      },
      { type: "portmap", capabilities: { portMappings: true }, snat: true },
      { type: "loopback" },
    ],
  };
}

/** A free TCP port on the host. */
export function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/** Starts the echo server helper inside the netns at `netns`; resolves once it listens. */
export async function echoServerInNetns(netns: string, port: number): Promise<Deno.ChildProcess> {
  const script = new URL("./cni_echo_server.ts", import.meta.url).pathname;
  const child = spawnInNetns(netns, Deno.execPath(), {
    args: ["run", "-A", "--quiet", script, String(port)],
    stdin: "null",
    stdout: "piped",
    stderr: "inherit",
  });
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let seen = "";
  while (!seen.includes("ready")) {
    const { value, done } = await reader.read();
    if (done) throw new Error("echo server exited before listening");
    seen += value;
  }
  reader.releaseLock();
  return child;
}

/** Stops a child process and waits for it. */
export async function stop(child: Deno.ChildProcess): Promise<void> {
  killHard(child);
  await child.status;
  await child.stdout?.cancel().catch(() => {});
}

/** Reads one line from `host:port` (TCP). */
export async function readLine(hostname: string, port: number): Promise<string> {
  const conn = await Deno.connect({ hostname, port });
  try {
    const buf = new Uint8Array(256);
    let text = "";
    while (!text.includes("\n")) {
      const n = await conn.read(buf);
      if (n === null) break;
      text += new TextDecoder().decode(buf.subarray(0, n));
    }
    return text.trim();
  } finally {
    conn.close();
  }
}

/**
 * Resolves once process `pid` runs Deno (a launcher script has exec'd it) and has a SIGINT handler
 * installed (SigCgt bit 2 in /proc/PID/status).
 */
export async function waitSigintHandler(pid: number, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const exe = await Deno.readLink(`/proc/${pid}/exe`).catch(() => "");
    const status = await Deno.readTextFile(`/proc/${pid}/status`).catch(() => "");
    const m = /SigCgt:\s*([0-9a-f]+)/.exec(status);
    if (exe.endsWith("/deno") && m && (BigInt(`0x${m[1]}`) & 2n) !== 0n) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`process ${pid} installed no SIGINT handler within ${timeoutMs} ms`);
}

/** Holds nerdbox's CNI lock (as a concurrent nerdbox would) until the returned release is called. */
export async function holdCniLock(stateDir = "/run/nerdbox/cni"): Promise<() => void> {
  await Deno.mkdir(stateDir, { recursive: true, mode: 0o700 });
  const f = await Deno.open(`${stateDir}/lock`, { create: true, write: true, mode: 0o600 });
  await f.lock(true);
  return () => f.close();
}

/** Fails loudly when one of Debian's CNI `plugins` is not installed. */
export async function requireCniPlugins(
  plugins = ["bridge", "host-local", "loopback", "portmap"],
): Promise<void> {
  for (const p of plugins) {
    await Deno.stat(`${DEBIAN_CNI_BIN}/${p}`).catch(() => {
      throw new Error(
        `Debian CNI plugin ${DEBIAN_CNI_BIN}/${p} missing: apt-get install containernetworking-plugins`,
      );
    });
  }
}

/** This host's outbound IPv4 address (the source of its default route). */
export async function outboundIp(): Promise<string> {
  const o = await new Deno.Command("ip", {
    args: ["-4", "-o", "route", "get", "1.1.1.1"],
    stdout: "piped",
  }).output();
  const ip = /src (\S+)/.exec(new TextDecoder().decode(o.stdout))?.[1];
  if (!ip) throw new Error("this host has no IPv4 default route: the outbound test needs one");
  return ip;
}

/**
 * The tutorial's runsc flow up to the runtime: a named netns `ns`, the bridge network `network`
 * of `conf` ADDed as eth0 and its loopback as lo, the host baseline recorded in `state`.
 * `teardown` DELs both, deletes the netns and puts the host back.
 */
export async function tutorialNetns(conf: string, network: string, ns: string, state: string) {
  const opts = { binDirs: [DEBIAN_CNI_BIN], cacheDir: `${state}/cache` };
  const bridge = await pickCniNetwork(conf, network);
  const lo = await pickCniNetwork(conf, "lo");
  await recordHostBaseline(bridge, state);
  const netns = await createNamedNetns(ns);
  const rt = { containerId: ns, ifName: "eth0", netns: `/var/run/netns/${ns}` };
  return {
    netns,
    /** The path as the runtime is given it. */
    path: rt.netns,
    add: async () => {
      await addNetworkList(bridge, rt, opts);
      await addNetworkList(lo, { ...rt, ifName: "lo" }, opts);
    },
    teardown: async () => {
      await delNetworkList(lo, { ...rt, ifName: "lo" }, opts).catch(() => {});
      await delNetworkList(bridge, rt, opts).catch(() => {});
      await deleteNamedNetns(ns);
      await cleanupHost(state);
    },
  };
}
