/**
 * libkrun e2e, a Kubernetes pod under CRI (inside L1): the two-container pod scenario of
 * tests/integration/cri_pod_test.ts (tests/helpers/cri_pod_scenario.ts) with the pod annotated
 * `io.containerd.nerdbox.backend=libkrun`, on a private CRI node (containerd 1.6, CNI bridge).
 */
import { LIBKRUN_TEST_BOOT_TIMEOUT_MS, libkrunTest } from "../../helpers/kvm_guests.ts";
import { runCriPodScenario } from "../../helpers/cri_pod_scenario.ts";
import { KRUN_ENV } from "./krun.ts";

libkrunTest(
  "libkrun CRI pod: two containers, localhost, hostname, DNS, exec/logs/attach/port-forward, nothing left",
  async () => {
    for (const [k, v] of Object.entries(KRUN_ENV)) Deno.env.set(k, v);
    await runCriPodScenario({
      backend: "libkrun",
      startMs: LIBKRUN_TEST_BOOT_TIMEOUT_MS,
      settleMs: 45_000,
      podAnnotations: { "io.containerd.nerdbox.resources.memory": "2G" },
    });
  },
);
