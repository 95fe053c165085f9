import assert from "node:assert/strict";
import { isKernelLine, l1Wedge } from "../nested/l1.ts";
import { failedJunit, junitCounts, mergeJunit } from "../nested/junit.ts";

Deno.test("nested rig: kernel lines are not progress; a soft lockup of WEDGE_LOCKUP_S is a wedge", () => {
  assert.equal(isKernelLine("[  945.096774] watchdog: BUG: soft lockup"), true);
  assert.equal(isKernelLine("running 6 tests from ./tests/nested/cases/basic_l1.ts"), false);
  assert.equal(isKernelLine(" ok (58s)"), false);
  const line = "[  945.0] watchdog: BUG: soft lockup - CPU#0 stuck for 809s! [kvm-pit/240:248]";
  assert.match(l1Wedge(line) ?? "", /stuck for 809 s in kvm-pit\/240:248/);
  assert.equal(
    l1Wedge("[ 30.1] watchdog: BUG: soft lockup - CPU#1 stuck for 71s! [rcu_preempt:15]"),
    undefined,
  );
  assert.equal(l1Wedge("ok (58s)"), undefined);
});

Deno.test("nested rig: per-file reports merge into one; a file that never reported is a failure", () => {
  const deno = (tests: number, failures: number, name: string) =>
    `<?xml version="1.0"?><testsuites name="deno test" tests="${tests}" failures="${failures}" ` +
    `errors="0"><testsuite name="${name}"><testcase name="a" classname="${name}">` +
    (failures ? `<failure message="x"/>` : "") + `</testcase></testsuite></testsuites>`;
  const merged = mergeJunit([
    deno(6, 0, "basic"),
    deno(2, 1, "kill"),
    failedJunit("tests/nested/cases/shim_l1.ts", "case file", "L1 wedged 2 times: <lockup>"),
  ]);
  const c = junitCounts(merged);
  assert.equal(c.passed, 7);
  assert.equal(c.failed, 2);
  assert.deepEqual(c.failures, ["kill > a", "tests/nested/cases/shim_l1.ts > case file"]);
  assert.match(merged, /L1 wedged 2 times: &lt;lockup&gt;/);
});
