/**
 * CNI benchmark, side by side in one run (interleaved rounds): one attach + detach cycle of the
 * list bridge + portmap (one port mapping) + loopback, with Debian's plugins,
 *  - by hand: `ip netns add`, each plugin's ADD with prevResult piped along, DEL in reverse,
 *    `ip netns del` — what the tutorial's shell steps do (plus the DEL it leaves out);
 *  - nerdbox runner: the same through lib/net/cni.ts (VERSION pre-check, cache, rollback ready);
 *  - nerdbox session: startCniSession + teardown (adds GC scan, lock, owner record and the host
 *    cleanup that removes the bridge, nat tables and ip_forward again every round).
 * Prints medians and the ratios against by-hand. `deno task bench` runs it as one bench case; or
 * run it directly: `bin/deno run -A bench/cni_bench.ts [rounds]`.
 */
import { addNetworkList, delNetworkList, PLUGIN_PATH } from "../lib/net/cni.ts";
import { parseCniConfig } from "../lib/net/cni_config.ts";
import { cleanupHost, recordHostBaseline } from "../lib/net/cni_host_cleanup.ts";
import { startCniSession } from "../lib/net/cni_session.ts";
import { createNamedNetns, deleteNamedNetns } from "../lib/net/netns.ts";
import { median } from "./bench_util.ts";

const BIN = "/usr/lib/cni";
const LIST = {
  cniVersion: "1.0.0",
  name: "nbxcnibench",
  plugins: [
    {
      type: "bridge",
      bridge: "nbxcnib0",
      isGateway: true,
      ipMasq: true,
      ipam: {
        type: "host-local",
        ranges: [[{ subnet: "10.213.99.0/24" }]],
        routes: [{ dst: "0.0.0.0/0" }],
      },
    },
    { type: "portmap", capabilities: { portMappings: true } },
    { type: "loopback" },
  ],
};
const MAPPINGS = [{ hostPort: 18999, containerPort: 80, protocol: "tcp" }];

async function plugin(
  type: string,
  command: string,
  netns: string,
  conf: unknown,
): Promise<string> {
  const child = new Deno.Command(`${BIN}/${type}`, {
    clearEnv: true,
    env: {
      PATH: PLUGIN_PATH,
      CNI_COMMAND: command,
      CNI_CONTAINERID: "nbxcni-bench-hand",
      CNI_NETNS: netns,
      CNI_IFNAME: "eth0",
      CNI_PATH: BIN,
    },
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const w = child.stdin.getWriter();
  await w.write(new TextEncoder().encode(JSON.stringify(conf)));
  await w.close();
  const out = await child.output();
  const text = new TextDecoder().decode(out.stdout);
  if (!out.success) throw new Error(`${type} ${command}: ${text}`);
  return text;
}

async function byHand(): Promise<number> {
  const t = performance.now();
  const netns = await createNamedNetns("nbxcni-bench-hand");
  let prev: unknown;
  for (const p of LIST.plugins) {
    const conf = {
      ...p,
      name: LIST.name,
      cniVersion: LIST.cniVersion,
      ...(prev ? { prevResult: prev } : {}),
      ...(p.type === "portmap" ? { runtimeConfig: { portMappings: MAPPINGS } } : {}),
    };
    prev = JSON.parse(await plugin(p.type, "ADD", netns, conf));
  }
  for (const p of [...LIST.plugins].reverse()) {
    const conf = {
      ...p,
      name: LIST.name,
      cniVersion: LIST.cniVersion,
      prevResult: prev,
      ...(p.type === "portmap" ? { runtimeConfig: { portMappings: MAPPINGS } } : {}),
    };
    await plugin(p.type, "DEL", netns, conf);
  }
  await deleteNamedNetns("nbxcni-bench-hand");
  return performance.now() - t;
}

async function runner(cacheDir: string): Promise<number> {
  const list = parseCniConfig(JSON.stringify(LIST), "bench.conflist");
  const t = performance.now();
  const netns = await createNamedNetns("nbxcni-bench-run");
  const rt = {
    containerId: "nbxcni-bench-run",
    ifName: "eth0",
    netns,
    capabilityArgs: { portMappings: MAPPINGS },
  };
  await addNetworkList(list, rt, { binDirs: [BIN], cacheDir });
  await delNetworkList(list, rt, { binDirs: [BIN], cacheDir });
  await deleteNamedNetns("nbxcni-bench-run");
  return performance.now() - t;
}

async function session(confDir: string): Promise<number> {
  const t = performance.now();
  const s = await startCniSession({
    id: "nbxcni-bench-ses",
    confDir,
    binDir: BIN,
    ports: [{ hostPort: 18999, guestPort: 80, protocol: "tcp" }],
    handleSignals: false,
  });
  await s.teardown();
  return performance.now() - t;
}

/** Runs `rounds` interleaved rounds and returns the report text. */
export async function cniBench(rounds = 8): Promise<string> {
  const confDir = await Deno.makeTempDir({ prefix: "nbxcni-bench-" });
  const cacheDir = await Deno.makeTempDir({ prefix: "nbxcni-bench-cache-" });
  const state = await Deno.makeTempDir({ prefix: "nbxcni-bench-state-" });
  await Deno.writeTextFile(`${confDir}/10-bench.conflist`, JSON.stringify(LIST));
  const hand: number[] = [];
  const run: number[] = [];
  const ses: number[] = [];
  try {
    await recordHostBaseline(parseCniConfig(JSON.stringify(LIST), "bench.conflist"), state);
    await byHand(); // warm-up: page cache, first iptables-nft table creation
    await runner(cacheDir);
    for (let i = 0; i < rounds; i++) {
      hand.push(await byHand());
      run.push(await runner(cacheDir));
      ses.push(await session(confDir));
    }
  } finally {
    await deleteNamedNetns("nbxcni-bench-hand").catch(() => {});
    await deleteNamedNetns("nbxcni-bench-run").catch(() => {});
    await cleanupHost(state);
    for (const d of [confDir, cacheDir, state]) await Deno.remove(d, { recursive: true });
  }
  const h = median(hand);
  const r = median(run);
  const s = median(ses);
  return [
    `CNI attach+detach, bridge+portmap(1 mapping)+loopback, ${rounds} interleaved rounds (median ms):`,
    `  by hand (plugins piped, ip netns)     ${h.toFixed(1)}`,
    `  nerdbox runner (lib/net/cni.ts)       ${r.toFixed(1)}   ratio ${(r / h).toFixed(2)}x`,
    `  nerdbox session (+GC, host cleanup)   ${s.toFixed(1)}   ratio ${
      (s / h).toFixed(2)
    }x  (issue 14 baseline 1.40–1.70x, goal ≤ 1.2x)`,
  ].join("\n");
}

if (import.meta.main) {
  console.log(await cniBench(Number(Deno.args[0] ?? 8)));
} else if (typeof Deno.bench === "function") {
  Deno.bench(
    { name: "cni: nerdbox ADD+DEL vs by hand (see report)", n: 1, warmup: 0 },
    async () => {
      console.log(await cniBench(5));
    },
  );
}
