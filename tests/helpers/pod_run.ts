/**
 * Test helper for `nerdbox run` as a child process on a pod network: output capture, waiting,
 * the run's state dir (found by the owner pid in its owner.json), the processes still naming it,
 * a netns's observable state (links, addresses, routes, qdiscs) and a host-side veth "pod".
 */
import { RUN_RECORD_FILE } from "../../lib/vm/run_state.ts";
import { listProcesses } from "./procs.ts";
import { waitFor as poll } from "./wait.ts";

const NERDBOX = new URL("../../bin/nerdbox", import.meta.url).pathname;

/** A running `nerdbox run`. */
export interface PodRun {
  child: Deno.ChildProcess;
  output: () => string;
  done: Promise<{ code: number; output: string }>;
}

/** Starts `nerdbox run ARGS` with stdout+stderr captured. */
export function nerdboxRun(args: string[]): PodRun {
  const child = new Deno.Command(NERDBOX, {
    args: ["run", ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let out = "";
  const pump = async (s: ReadableStream<Uint8Array>) => {
    for await (const c of s.pipeThrough(new TextDecoderStream())) out += c;
  };
  const pumps = Promise.all([pump(child.stdout), pump(child.stderr)]);
  const done = (async () => {
    const st = await child.status;
    await pumps;
    return { code: st.code, output: out };
  })();
  return { child, output: () => out, done };
}

/** waitFor (tests/helpers/wait.ts) that fails when `run` exits first; errors from `fn` mean "not yet". */
export function waitFor<T>(
  what: string,
  run: PodRun | undefined,
  fn: () => Promise<T | undefined>,
  timeoutMs = 120_000,
): Promise<T> {
  return poll(what, fn, { ms: timeoutMs, retryErrors: true, ...(run ? { run } : {}) });
}

/** GET with a 2 s timeout; the trimmed body, or undefined when not 2xx. */
export async function httpGet(url: string): Promise<string | undefined> {
  const r = await fetch(url, { signal: AbortSignal.timeout(2000) });
  return r.ok ? (await r.text()).trim() : undefined;
}

/** Accepts one connection on `hostname:0`; `got` resolves with its source address and text. */
export function oneShotListener(hostname: string): {
  port: number;
  got: Promise<{ from: string; text: string }>;
  close(): void;
} {
  const listener = Deno.listen({ hostname, port: 0 });
  const got = (async () => {
    const conn = await listener.accept();
    const buf = new Uint8Array(64);
    const n = await conn.read(buf);
    conn.close();
    return {
      from: (conn.remoteAddr as Deno.NetAddr).hostname,
      text: new TextDecoder().decode(buf.subarray(0, n ?? 0)).trim(),
    };
  })();
  got.catch(() => {});
  return {
    port: (listener.addr as Deno.NetAddr).port,
    got,
    close: () => {
      try {
        listener.close();
      } catch { /* closed */ }
    },
  };
}

/** The state dir under /run/nerdbox whose owner.json names `pid` (undefined until written). */
export async function stateDirOf(pid: number, root = "/run/nerdbox"): Promise<string | undefined> {
  for await (const e of Deno.readDir(root)) {
    const text = await Deno.readTextFile(`${root}/${e.name}/${RUN_RECORD_FILE}`).catch(() => "");
    if (text && JSON.parse(text).owner?.pid === pid) return `${root}/${e.name}`;
  }
  return undefined;
}

/** Processes (pid → argv[0]) whose command line mentions `needle`, this process excluded. */
export async function procsMentioning(needle: string): Promise<Map<number, string>> {
  const found = new Map<number, string>();
  for (const p of await listProcesses()) {
    if (p.cmdline !== "" && p.argv.some((a) => a.includes(needle))) found.set(p.pid, p.argv[0]);
  }
  return found;
}

async function cmd(bin: string, args: string[]): Promise<string> {
  const o = await new Deno.Command(bin, { args, stdout: "piped", stderr: "piped" }).output();
  const dec = new TextDecoder();
  if (!o.success) throw new Error(`${bin} ${args.join(" ")}: ${dec.decode(o.stderr).trim()}`);
  return dec.decode(o.stdout);
}

/** Runs a command inside the netns at `path` (nsenter) and returns stdout. */
export function inNetns(path: string, bin: string, args: string[]): Promise<string> {
  return cmd("nsenter", [`--net=${path}`, "--", bin, ...args]);
}

/** What can be seen of a netns: links, addresses, routes, every link's qdiscs and filters. */
export async function netnsState(path: string): Promise<string> {
  const links = JSON.parse(await inNetns(path, "ip", ["-j", "link", "show"])) as {
    ifname: string;
  }[];
  const parts = [
    await inNetns(path, "ip", ["-o", "link", "show"]),
    await inNetns(path, "ip", ["-o", "addr", "show"]),
    await inNetns(path, "ip", ["route", "show", "table", "all"]),
  ];
  for (const l of links) {
    parts.push(await inNetns(path, "tc", ["qdisc", "show", "dev", l.ifname]));
    parts.push(await inNetns(path, "tc", ["filter", "show", "dev", l.ifname, "ingress"]));
  }
  // DAD may still be running on a fresh link-local address: not a change nerdbox made.
  return parts.join("\n").replace(/ +\\ +/g, " ").replaceAll(" tentative", "");
}

/** A netns joined to the host by a veth pair: host side `hostIp`, `eth0` in the netns. */
export interface VethPod {
  name: string;
  path: string;
  podIp: string;
  hostIp: string;
  delete(): Promise<void>;
}

/** Creates a netns with eth0 = podIp/24 (default via hostIp) and the host end of the veth. */
export async function makeVethPod(prefix: string, subnet: string): Promise<VethPod> {
  const tag = crypto.randomUUID().replaceAll("-", "").slice(0, 15 - prefix.length);
  const name = `${prefix}${tag}`;
  const hostIf = `${prefix}h${tag}`.slice(0, 15);
  const podIp = `${subnet}.2`;
  const hostIp = `${subnet}.1`;
  const del = async () => {
    await new Deno.Command("ip", { args: ["link", "del", hostIf], stderr: "null" }).output();
    await new Deno.Command("ip", { args: ["netns", "del", name], stderr: "null" }).output();
  };
  try {
    await cmd("ip", ["netns", "add", name]);
    await cmd("ip", ["link", "add", hostIf, "type", "veth", "peer", "name", "eth0", "netns", name]);
    await cmd("ip", ["addr", "add", `${hostIp}/24`, "dev", hostIf]);
    await cmd("ip", ["link", "set", hostIf, "up"]);
    await cmd("ip", ["-n", name, "link", "set", "lo", "up"]);
    await cmd("ip", ["-n", name, "addr", "add", `${podIp}/24`, "dev", "eth0"]);
    await cmd("ip", ["-n", name, "link", "set", "eth0", "up"]);
    await cmd("ip", ["-n", name, "route", "add", "default", "via", hostIp]);
    // Let IPv6 DAD finish on eth0's link-local address, so snapshots taken now are stable.
    for (let i = 0; i < 100; i++) {
      const a = await cmd("ip", ["-n", name, "-6", "addr", "show", "dev", "eth0"]);
      if (/inet6 fe80/.test(a) && !/tentative/.test(a)) break;
      await new Promise((r) => setTimeout(r, 100));
    }
  } catch (e) {
    await del();
    throw e;
  }
  return { name, path: `/run/netns/${name}`, podIp, hostIp, delete: del };
}

/** Polls until no process mentions `needle`; resolves with the ms it took, or throws. */
export async function waitProcsGone(needle: string, timeoutMs = 30_000): Promise<number> {
  const t0 = performance.now();
  for (;;) {
    const left = await procsMentioning(needle);
    if (left.size === 0) return Math.round(performance.now() - t0);
    if (performance.now() - t0 > timeoutMs) {
      throw new Error(
        `still running after ${timeoutMs} ms: ${[...left].map(([p, a]) => `${p} ${a}`).join(", ")}`,
      );
    }
    await new Promise((r) => setTimeout(r, 200));
  }
}
