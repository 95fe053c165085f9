/**
 * Module graphs of the start-up paths (from `deno info --json`, static imports only — what a path
 * loads before it can do anything): `nerdbox run`, the `vmm` child, the shim's `start`/`delete`
 * commands and its daemon, the guest init, and the minimal libkrun script they are compared with.
 * Counts npm packages and `node:` modules apart: the first of either initialises Deno's Node
 * compatibility layer (≈8–10 ms on this host). `deno task bench` prints it; or run it directly.
 */
const ROOT = new URL("../", import.meta.url).pathname;

interface InfoModule {
  specifier: string;
  dependencies?: Array<{ isDynamic?: boolean; code?: { specifier?: string } }>;
}

/** Static module closure of `entry` plus the modules `extra` (dynamic imports the path takes). */
async function staticGraph(entry: string, extra: string[] = []): Promise<string[]> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json", `${ROOT}${entry}`],
    cwd: ROOT,
    stdout: "piped",
    stderr: "null",
  }).output();
  const info = JSON.parse(new TextDecoder().decode(out.stdout)) as {
    roots: string[];
    modules: InfoModule[];
    redirects?: Record<string, string>;
  };
  const mods = new Map(info.modules.map((m) => [m.specifier, m]));
  const seen = new Set<string>();
  const walk = (s: string) => {
    const r = info.redirects?.[s] ?? s;
    if (seen.has(r)) return;
    seen.add(r);
    for (const d of mods.get(r)?.dependencies ?? []) {
      if (!d.isDynamic && d.code?.specifier) walk(d.code.specifier);
    }
  };
  walk(info.roots[0]);
  for (const e of extra) walk(`file://${ROOT}${e}`);
  return [...seen];
}

const PATHS: Array<[string, string, string[]]> = [
  ["nerdbox run (parent)", "main.ts", ["lib/cli/run.ts"]],
  ["nerdbox vmm (libkrun child)", "main.ts", ["lib/cli/vmm.ts"]],
  ["shim start/delete command", "main.ts", ["lib/cli/shim.ts", "lib/shim/manager.ts"]],
  ["shim daemon (serve)", "main.ts", ["lib/cli/shim.ts", "lib/shim/daemon.ts"]],
  ["guest init", "guest/main.ts", []],
  ["bench/krun_minimal.ts (anchor)", "bench/krun_minimal.ts", []],
];

/** The report text. */
export async function moduleGraphReport(): Promise<string> {
  const lines = ["module graphs (static imports; deno info --json):"];
  for (const [name, entry, extra] of PATHS) {
    const g = await staticGraph(entry, extra);
    const npm = new Set(g.flatMap((s) => s.match(/^npm:\/?((?:@[^/]+\/)?[^/@]+)/)?.[1] ?? []));
    const node = g.filter((s) => s.startsWith("node:"));
    lines.push(
      `  ${name.padEnd(32)} ${String(g.length).padStart(3)} modules; npm: ${
        [...npm].join(", ") || "none"
      }; ${node.join(", ") || "no node: modules"}`,
    );
  }
  return lines.join("\n");
}

if (import.meta.main) {
  console.log(await moduleGraphReport());
} else if (typeof Deno.bench === "function") {
  let report: string | undefined;
  Deno.bench(
    { name: "module graph report printed below (times nothing)", n: 1, warmup: 0 },
    async () => {
      report ??= await moduleGraphReport();
    },
  );
  globalThis.addEventListener("unload", () => report && console.log(report));
}
