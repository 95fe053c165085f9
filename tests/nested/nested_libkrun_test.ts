/**
 * The nested libkrun suite: this host's /dev/kvm cannot run guests (none, or kvm_pvm), so ONE L1
 * under QEMU TCG with an emulated SVM CPU is booted (tests/nested/l1.ts), loads kvm_amd, and runs
 * the libkrun e2e cases (tests/nested/cases/*_l1.ts) with this checkout's own test runner; their
 * junit comes back over the writable share. No /dev/kvm in L1 fails here, loudly.
 *
 * Counting: tests/run.ts passes NERDBOX_NESTED_JUNIT and adds the inner cases to its final
 * `N passed, N failed` line; this test then asserts the rig itself (L1, /dev/kvm, a report). Run
 * alone (plain `deno test`), it fails when any inner case failed.
 * NERDBOX_NESTED_CASES=basic,tsi runs only the case files whose names contain those words.
 */
import assert from "node:assert/strict";
import { CHECKOUT, L1_IO, runInL1 } from "./l1.ts";
import { NESTED_CACHE_DIR } from "../../scripts/setup_nested.ts";
import { guestKvm, LIBKRUN_TEST_BOOT_TIMEOUT_MS } from "../helpers/kvm_guests.ts";
import { junitCounts } from "./junit.ts";

const CASES_DIR = `${CHECKOUT}/tests/nested/cases`;

/** Case files to run inside L1, filtered by NERDBOX_NESTED_CASES. */
export function selectedCases(filter = Deno.env.get("NERDBOX_NESTED_CASES") ?? ""): string[] {
  const words = filter.split(",").map((w) => w.trim()).filter(Boolean);
  return [...Deno.readDirSync(CASES_DIR)]
    .map((e) => e.name)
    .filter((n) => n.endsWith("_l1.ts"))
    .filter((n) => words.length === 0 || words.some((w) => n.includes(w)))
    .sort()
    .map((n) => `tests/nested/cases/${n}`);
}

Deno.test({
  name: "nested: libkrun e2e cases run in an L1 with a /dev/kvm that runs guests",
  ignore: Deno.env.get("NERDBOX_IN_L1") === "1", // never recurse inside L1
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const cases = selectedCases();
    assert.ok(cases.length > 0, `no case file matches NERDBOX_NESTED_CASES`);
    const runDir = `${NESTED_CACHE_DIR}/runs/last`;
    const rel = "runs/last";
    const bench = Deno.env.get("NERDBOX_NESTED_BENCH") === "1"
      ? `\n  ./bin/deno run -A bench/nested_boot.ts ${
        Deno.env.get("NERDBOX_NESTED_BENCH_ROUNDS") ?? 3
      } > ${L1_IO}/${rel}/bench.json`
      : "";
    const started = performance.now();
    const r = await runInL1({
      runDir,
      script: `./bin/deno run -A tests/run.ts ${cases.join(" ")}${bench}`,
      env: {
        NERDBOX_IN_L1: "1",
        NERDBOX_CACHE_DIR: `${L1_IO}/images`,
        NERDBOX_BOOT_TIMEOUT_MS: String(LIBKRUN_TEST_BOOT_TIMEOUT_MS),
        NERDBOX_JUNIT_OUT: `${L1_IO}/${rel}/junit.xml`,
        NO_COLOR: "1",
      },
      timeoutMs: 40 * 60_000,
    });
    const wall = ((performance.now() - started) / 1000).toFixed(0);
    const tail = r.console.split("\n").slice(-30).join("\n");
    assert.ok(!r.timedOut, `L1 did not power off in time (${wall} s):\n${tail}`);
    assert.ok(
      r.kvm,
      `L1 got no usable /dev/kvm (kvm_amd under QEMU TCG -cpu max); host: ${guestKvm.reason}\n${tail}`,
    );
    let xml: string;
    try {
      xml = await Deno.readTextFile(`${runDir}/junit.xml`);
    } catch {
      assert.fail(`the inner suite left no junit report (exit ${r.scriptCode}):\n${tail}`);
    }
    const c = junitCounts(xml);
    console.log(
      `nested: ${cases.length} case files, ${c.passed} passed, ${c.failed} failed inside L1; ` +
        `L1 wall time ${wall} s`,
    );
    for (const f of c.failures) console.log(`nested: FAILED ${f}`);
    assert.ok(c.passed + c.failed > 0, "the inner suite ran no case");
    const merged = Deno.env.get("NERDBOX_NESTED_JUNIT");
    if (merged) await Deno.copyFile(`${runDir}/junit.xml`, merged);
    else assert.equal(c.failed, 0, `inner failures:\n${c.failures.join("\n")}`);
  },
});
