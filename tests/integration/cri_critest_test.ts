/**
 * Kubernetes CRI conformance: the shared kit (critest v1.35.0, a private containerd 1.6 with CRI,
 * an offline registry) runs with nerdbox as the runtime, from this checkout's bin/. Passes when
 * critest passes at least the baseline docs/kubernetes.md records, every failing spec is listed
 * there with its reason, and the kit found the host as it left it (host-diff.txt empty).
 * About 10 to 20 minutes: the suite runs it once.
 */
import assert from "node:assert/strict";
import { REPO } from "../helpers/containerd.ts";
import {
  failedSpecs,
  findCriKit,
  parseCritestBaseline,
  parseCritestSummary,
} from "../helpers/cri_kit.ts";

Deno.test("critest (CRI conformance) with nerdbox as the runtime meets the documented baseline", async () => {
  const kit = await findCriKit();
  const baseline = parseCritestBaseline(await Deno.readTextFile(`${REPO}/docs/kubernetes.md`));
  const out = await Deno.makeTempDir({ prefix: "nerdbox-critest-" });
  let keep = false;
  try {
    const run = await new Deno.Command(`${kit}/run-critest.sh`, {
      args: ["--runtime", "nerdbox", "--shim-dir", `${REPO}/bin`, "--out", out],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stdout = new TextDecoder().decode(run.stdout);
    const stderr = new TextDecoder().decode(run.stderr);
    keep = true; // kept for the failure messages below; removed at the end when all passed
    assert.equal(run.code, 0, `run-critest.sh exit ${run.code}:\n${stderr.slice(-3000)}`);
    const summary = parseCritestSummary(stdout);
    assert.equal(summary.runtime, "nerdbox");
    const failed = failedSpecs(await Deno.readTextFile(`${out}/results.txt`));
    const unexplained = failed.filter((s) => !baseline.knownFailures.has(s));
    assert.deepEqual(
      unexplained,
      [],
      `specs failing that docs/kubernetes.md does not list (see ${out}/failures.txt)`,
    );
    assert.ok(
      summary.passed >= baseline.minPassed,
      `critest passed ${summary.passed} < baseline ${baseline.minPassed} (${out}/results.txt)`,
    );
    const hostDiff = (await Deno.readTextFile(`${out}/host-diff.txt`)).trim();
    assert.equal(hostDiff, "", `the host was changed (${out}/host-diff.txt)`);
    console.log(
      `critest: ${summary.passed} passed, ${summary.failed} failed, ${summary.skipped} skipped ` +
        `(baseline ${baseline.minPassed}; ${baseline.knownFailures.size} known failures listed)`,
    );
    keep = false;
  } finally {
    if (!keep) await Deno.remove(out, { recursive: true }).catch(() => {});
  }
});
