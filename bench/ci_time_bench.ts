/**
 * The CI-time line: how long each test group takes, from the per-file durations `tests/run.ts`
 * records (tests/.tmp/timings.json, see tests/timings.ts), against CI's 60-minute budget. Groups
 * are the directories under tests/ (unit, integration, fuzz…). Run `deno task test` first for a
 * complete picture; files never run here are listed as missing. `deno task bench` prints it.
 */
import type { FileTiming } from "../tests/timings.ts";

const ROOT = new URL("../", import.meta.url).pathname;
const BUDGET_S = 60 * 60;

async function testFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(`${ROOT}${dir}`)) {
    const p = `${dir}/${e.name}`;
    if (e.isDirectory && e.name !== ".tmp" && e.name !== "helpers") out.push(...await testFiles(p));
    else if (e.isFile && e.name.endsWith("_test.ts")) out.push(p);
  }
  return out;
}

/** The report text. */
export async function ciTimeReport(): Promise<string> {
  let timings: Record<string, FileTiming> = {};
  try {
    timings = JSON.parse(await Deno.readTextFile(`${ROOT}tests/.tmp/timings.json`));
  } catch { /* none yet */ }
  const groups = new Map<string, { s: number; files: number; missing: number }>();
  for (const f of (await testFiles("tests")).sort()) {
    const g = f.split("/")[1];
    const e = groups.get(g) ?? { s: 0, files: 0, missing: 0 };
    const t = timings[f];
    if (t) {
      e.s += t.seconds;
      e.files++;
    } else e.missing++;
    groups.set(g, e);
  }
  const total = [...groups.values()].reduce((a, g) => a + g.s, 0);
  const lines = [...groups].map(([g, e]) =>
    `  ${g.padEnd(12)} ${(e.s / 60).toFixed(1).padStart(5)} min  (${e.files} files timed${
      e.missing ? `, ${e.missing} never run here` : ""
    })`
  );
  const slowest = Object.entries(timings).sort((a, b) => b[1].seconds - a[1].seconds).slice(0, 3)
    .map(([f, t]) => `${f} ${t.seconds.toFixed(0)} s`).join(", ");
  return [
    `CI time (test run only, from tests/.tmp/timings.json): ${(total / 60).toFixed(1)} min of ` +
    `${BUDGET_S / 60} (${((total / BUDGET_S) * 100).toFixed(0)} %), setup not included`,
    ...lines,
    `  slowest: ${slowest || "(none timed yet: run deno task test)"}`,
  ].join("\n");
}

if (import.meta.main) {
  console.log(await ciTimeReport());
} else if (typeof Deno.bench === "function") {
  let report: string | undefined;
  Deno.bench(
    { name: "CI time report printed below (times nothing)", n: 1, warmup: 0 },
    async () => {
      report ??= await ciTimeReport();
    },
  );
  globalThis.addEventListener("unload", () => report && console.log(report));
}
