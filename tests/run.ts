/**
 * The test command: runs `deno test` over the given paths (default: all of tests/), streams its
 * output, and ends with the plain summary line `N passed, N failed` that CI reads. The nested
 * libkrun rig (tests/nested/) hands back its inner cases' junit report through
 * NERDBOX_NESTED_JUNIT; they are counted in that line too. NERDBOX_JUNIT_OUT keeps a copy of the
 * report (the rig uses it inside L1).
 */
import { junitCounts } from "./nested/junit.ts";
import { recordTimings } from "./timings.ts";

const root = new URL("..", import.meta.url).pathname;
const junit = `${root}tests/.tmp/junit-${Deno.pid}.xml`;
const nestedJunit = `${root}tests/.tmp/nested-junit-${Deno.pid}.xml`;
await Deno.mkdir(`${root}tests/.tmp`, { recursive: true });
await Deno.remove(junit).catch(() => {});
await Deno.remove(nestedJunit).catch(() => {});

const paths = Deno.args.length > 0 ? Deno.args : ["tests/"];
const child = new Deno.Command(Deno.execPath(), {
  args: ["test", "-A", "--no-check", `--junit-path=${junit}`, ...paths],
  cwd: root,
  stdin: "null",
  env: { NERDBOX_NESTED_JUNIT: nestedJunit },
}).spawn();
const { code } = await child.status;

let passed = 0;
let failed = 0;
try {
  const xml = await Deno.readTextFile(junit);
  await recordTimings(xml, `${root}tests/.tmp/timings.json`);
  ({ passed, failed } = junitCounts(xml));
  const out = Deno.env.get("NERDBOX_JUNIT_OUT");
  if (out) await Deno.writeTextFile(out, xml);
} catch {
  failed = 1; // no report: deno test could not even load the tests
}
if (code !== 0 && failed === 0) failed = 1;
try {
  const nested = junitCounts(await Deno.readTextFile(nestedJunit));
  console.log(`nested libkrun cases (inside L1): ${nested.passed} passed, ${nested.failed} failed`);
  for (const f of nested.failures) console.log(`  FAILED inside L1: ${f}`);
  passed += nested.passed;
  failed += nested.failed;
} catch {
  // the rig did not run (not among the paths) or failed before a report; its own test says so
}
await Deno.remove(junit).catch(() => {});
await Deno.remove(nestedJunit).catch(() => {});
console.log(`${passed} passed, ${failed} failed`);
Deno.exit(failed > 0 ? 1 : 0);
