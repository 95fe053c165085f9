/**
 * A Kubernetes pod of two containers on nerdbox under CRI, QEMU backend, containerd 1.6 (the
 * scenario is tests/helpers/cri_pod_scenario.ts, shared with the nested libkrun case
 * tests/nested/cases/cri_pod_l1.ts): httpd and a client in one pod VM reach each other on
 * localhost, see the pod's hostname and CRI's resolv.conf, share a hostPath volume with the host;
 * exec, logs, attach and port-forward work; removing the pod and stopping the node leave nothing.
 */
import { runCriPodScenario } from "../helpers/cri_pod_scenario.ts";

Deno.test({
  name:
    "CRI pod (QEMU): two containers, localhost, hostname, DNS, hostPath, exec/logs/attach/port-forward, nothing left",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    await runCriPodScenario({ backend: "qemu", startMs: 180_000 });
  },
});
