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
