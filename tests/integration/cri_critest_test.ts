/**
 * Kubernetes CRI conformance: the shared kit (critest v1.35.0, a private containerd with CRI, an
 * offline registry) runs with nerdbox as the runtime, from this checkout's bin/, against each
 * containerd line in NERDBOX_CRITEST_LINES (comma-separated; default `2.1`, the private install of
 * deno task setup: one critest run per CI; `1.6,2.1` adds bookworm's 1.6). Passes when critest
 * passes at least the baseline docs/kubernetes.md records for that line, every failing spec is
 * listed there with its reason, and the kit found the host as it left it (host-diff.txt empty).
 * About 10 to 20 minutes per line.
 */
import assert from "node:assert/strict";
import {
  CONTAINERD_LINES,
  containerdBinDir,
  type ContainerdLine,
  REPO,
} from "../helpers/containerd.ts";
import {
  failedSpecs,
  findCriKit,
  parseCritestBaseline,
  parseCritestSummary,
} from "../helpers/cri_kit.ts";

/** Runs the kit against containerd `line` and checks the documented baseline. */
async function critestMeetsBaseline(line: ContainerdLine): Promise<void> {
  const kit = await findCriKit();
  const docs = await Deno.readTextFile(`${REPO}/docs/kubernetes.md`);
  const baseline = parseCritestBaseline(docs, line);
  const out = await Deno.makeTempDir({ prefix: `nerdbox-critest-${line}-` });
  let keep = false;
  try {
    const run = await new Deno.Command(`${kit}/run-critest.sh`, {
      args: [
        ...["--runtime", "nerdbox", "--shim-dir", `${REPO}/bin`, "--out", out],
        ...["--containerd", `${containerdBinDir(line)}/containerd`],
      ],
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
    const version = await Deno.readTextFile(`${out}/summary.txt`);
    assert.match(version, new RegExp(`containerd \\S+ v?${line.replace(".", "\\.")}\\.`));
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
      `critest, containerd ${line}: ${summary.passed} passed, ${summary.failed} failed, ` +
        `${summary.skipped} skipped (baseline ${baseline.minPassed}; ` +
        `${baseline.knownFailures.size} known failures listed)`,
    );
    keep = false;
  } finally {
    if (!keep) await Deno.remove(out, { recursive: true }).catch(() => {});
  }
}

/** The lines to run, from NERDBOX_CRITEST_LINES; an unknown one fails here, naming it. */
function critestLines(): ContainerdLine[] {
  const raw = Deno.env.get("NERDBOX_CRITEST_LINES") ?? "2.1";
  return raw.split(",").map((w) => w.trim()).filter(Boolean).map((w) => {
    const line = CONTAINERD_LINES.find((l) => l === w);
    if (!line) {
      throw new Error(
        `NERDBOX_CRITEST_LINES: ${JSON.stringify(w)}: expected one of ${
          CONTAINERD_LINES.join(", ")
        }`,
      );
    }
    return line;
  });
}

for (const line of critestLines()) {
  Deno.test(`critest (CRI conformance) with nerdbox on containerd ${line} meets the documented baseline`, () =>
    critestMeetsBaseline(line));
}
