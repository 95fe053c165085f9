/** Counts in a `deno test --junit-path` report: passed, failed, and the failed cases' names. */

/** What a junit report says. */
export interface JunitCounts {
  passed: number;
  failed: number;
  /** `file > test name` of each failed case. */
  failures: string[];
}

/** Reads the totals on `<testsuites>` and names each `<testcase>` holding a failure or error. */
export function junitCounts(xml: string): JunitCounts {
  const top = xml.match(/<testsuites[^>]*>/)?.[0] ?? "";
  const attr = (name: string) => Number(top.match(new RegExp(`${name}="(\\d+)"`))?.[1] ?? 0);
  const failed = attr("failures") + attr("errors");
  const failures: string[] = [];
  for (const m of xml.matchAll(/<testcase ([^>]*)>([\s\S]*?)<\/testcase>/g)) {
    if (!/<(failure|error)\b/.test(m[2])) continue;
    const name = m[1].match(/name="([^"]*)"/)?.[1] ?? "?";
    const file = m[1].match(/classname="([^"]*)"/)?.[1] ?? "";
    failures.push(`${file} > ${name}`);
  }
  return { passed: attr("tests") - failed, failed, failures };
}

/** One report holding every case of `xmls` (deno test junit reports), totals summed. */
export function mergeJunit(xmls: string[]): string {
  let tests = 0, failures = 0, errors = 0;
  const bodies: string[] = [];
  for (const xml of xmls) {
    const top = xml.match(/<testsuites[^>]*>/)?.[0] ?? "";
    const attr = (name: string) => Number(top.match(new RegExp(`${name}="(\\d+)"`))?.[1] ?? 0);
    tests += attr("tests");
    failures += attr("failures");
    errors += attr("errors");
    bodies.push(xml.match(/<testsuites[^>]*>([\s\S]*)<\/testsuites>/)?.[1] ?? "");
  }
  return `<?xml version="1.0" encoding="UTF-8"?>\n` +
    `<testsuites name="nested" tests="${tests}" failures="${failures}" errors="${errors}">` +
    `${bodies.join("")}</testsuites>\n`;
}

/** A one-case report: `name` in `file` failed with `message` (a case file that never reported). */
export function failedJunit(file: string, name: string, message: string): string {
  const esc = (s: string) =>
    s.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;")
      .replaceAll('"', "&quot;");
  return `<testsuites tests="1" failures="1" errors="0"><testsuite name="${esc(file)}">` +
    `<testcase name="${esc(name)}" classname="${esc(file)}">` +
    `<failure message="${esc(message)}"></failure></testcase></testsuite></testsuites>`;
}
