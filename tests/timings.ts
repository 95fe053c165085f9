/**
 * Per-file test durations for the CI-time line (bench/ci_time_bench.ts): summed from the JUnit
 * report of each `tests/run.ts` run and merged into `tests/.tmp/timings.json` (file → seconds and
 * when it ran), so partial runs update their files and a full run refreshes all.
 */

/** What timings.json holds per test file. */
export interface FileTiming {
  seconds: number;
  tests: number;
  at: string;
}

/** Sums testcase times per test file (`classname`) from a Deno JUnit report. */
export function junitFileTimes(xml: string): Map<string, { seconds: number; tests: number }> {
  const out = new Map<string, { seconds: number; tests: number }>();
  for (const m of xml.matchAll(/<testcase\b[^>]*>/g)) {
    const cls = m[0].match(/classname="([^"]*)"/)?.[1];
    const time = Number(m[0].match(/time="([\d.]+)"/)?.[1] ?? NaN);
    if (!cls || Number.isNaN(time)) continue;
    const file = cls.replace(/^\.\//, "");
    const e = out.get(file) ?? { seconds: 0, tests: 0 };
    e.seconds += time;
    e.tests += 1;
    out.set(file, e);
  }
  return out;
}

/** Merges a JUnit report's per-file times into `path` (best effort: never fails the run). */
export async function recordTimings(xml: string, path: string): Promise<void> {
  try {
    let all: Record<string, FileTiming> = {};
    try {
      all = JSON.parse(await Deno.readTextFile(path));
    } catch { /* first run */ }
    const at = new Date().toISOString();
    for (const [file, t] of junitFileTimes(xml)) {
      all[file] = { seconds: Math.round(t.seconds * 1000) / 1000, tests: t.tests, at };
    }
    await Deno.writeTextFile(path, JSON.stringify(all, null, 1) + "\n");
  } catch { /* timings are informational */ }
}
