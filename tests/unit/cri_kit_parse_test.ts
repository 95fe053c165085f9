/** The readers of the CRI kit's summary line, its results.txt and the documented baseline. */
import assert from "node:assert/strict";
import { failedSpecs, parseCritestBaseline, parseCritestSummary } from "../helpers/cri_kit.ts";

Deno.test("cri kit: the summary is the last line, in the kit's documented form", () => {
  assert.deepEqual(
    parseCritestSummary("log\nmore\ncritest: 84 passed, 3 failed, 26 skipped (runtime runc)\n"),
    { passed: 84, failed: 3, skipped: 26, runtime: "runc" },
  );
  assert.throws(
    () => parseCritestSummary("critest: 84 passed, 3 failed, 26 skipped (runtime runc)\nERROR x"),
    /last line is not a critest summary: "ERROR x"/,
  );
});

Deno.test("cri kit: failed specs come from results.txt's FAIL lines", () => {
  assert.deepEqual(
    failedSpecs("PASS [k8s.io] A a\nFAIL [k8s.io] B b\nSKIP [k8s.io] C\nFAIL [sig-node] D\n"),
    ["[k8s.io] B b", "[sig-node] D"],
  );
});

Deno.test("cri kit: the baseline and the known failures are read from the docs", () => {
  const md = [
    "# x",
    "critest baseline, containerd 1.6: **21 passed** (6 failed)",
    "critest baseline, containerd 2.1: **30 passed**",
    "### Known failures",
    "",
    "- `[k8s.io] B b`: containerd 1.6 returns NotFound",
    "- `[sig-node] D`:",
    "  needs pods in one VM",
    "not a bullet `[k8s.io] E`: x",
    "## Next",
    "- `[k8s.io] F`: outside the section",
  ].join("\n");
  const b = parseCritestBaseline(md, "1.6");
  assert.equal(b.minPassed, 21);
  assert.equal(parseCritestBaseline(md, "2.1").minPassed, 30);
  assert.throws(
    () => parseCritestBaseline(md, "1.7"),
    /no 'critest baseline, containerd 1.7: N passed' line/,
  );
  assert.deepEqual([...b.knownFailures.keys()], ["[k8s.io] B b", "[sig-node] D"]);
  assert.equal(b.knownFailures.get("[sig-node] D"), "needs pods in one VM");
  assert.throws(() => parseCritestBaseline("nothing", "1.6"), /no 'critest baseline, containerd/);
});
