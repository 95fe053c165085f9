/**
 * From a bundle to a VmPlan for the runtime CLI, through the same steps `nerdbox run --bundle`
 * takes (lib/cli/run.ts sandboxInput → lib/spec → lib/vm/plan): one parser, both backends.
 */
import { parseRunFlags, RUN_STATE_ROOT, sandboxInput } from "../cli/run.ts";
import { buildSandboxSpec } from "../spec/sandbox.ts";
import { formatSpecError, type SandboxSpec, SpecValidationError } from "../spec/types.ts";
import { OciReadError } from "../spec/oci.ts";
import { validateNetnsPath } from "../net/netns.ts";
import { planVm, resolveBackend } from "../vm/plan.ts";
import { createRunStateDir, sweepDeadRuns } from "../vm/run_state.ts";
import type { VmPlan } from "../vm/types.ts";
import { type NetworkSummary, RuntimeError } from "./state.ts";

/** Reads and validates `<bundle>/config.json` for sandbox `id`; RuntimeError naming what is wrong. */
export async function sandboxSpecOf(
  bundle: string,
  id: string,
): Promise<{ spec: SandboxSpec; warnings: string[]; annotations: Record<string, string> }> {
  try {
    await Deno.stat(`${bundle}/config.json`);
  } catch {
    throw new RuntimeError(`bundle ${JSON.stringify(bundle)} has no config.json`);
  }
  try {
    const input = await sandboxInput(parseRunFlags(["--bundle", bundle, "--name", id]));
    const built = buildSandboxSpec({ ...input, netFlags: [], publish: [] });
    // `create` refuses a bad netns at once; the supervisor plans later (planVm checks it again then,
    // as the namespace may have gone in between).
    if (built.spec.netns !== undefined) validateNetnsPath(built.spec.netns, "config.json netns");
    return { ...built, annotations: "annotations" in input ? input.annotations : {} };
  } catch (e) {
    if (e instanceof SpecValidationError) {
      throw new RuntimeError(e.errors.map(formatSpecError).join("\n"));
    }
    if (e instanceof OciReadError) throw new RuntimeError(e.message);
    throw new RuntimeError((e as Error).message);
  }
}

/** Plans the VM and creates its run state dir (owned by this process, swept if it dies). */
export async function planSandbox(spec: SandboxSpec): Promise<VmPlan> {
  const backend = await resolveBackend(spec.backend);
  await Deno.mkdir(RUN_STATE_ROOT, { recursive: true, mode: 0o700 });
  await sweepDeadRuns(RUN_STATE_ROOT).catch(() => {});
  const stateDir = await createRunStateDir(RUN_STATE_ROOT, `${spec.id.slice(0, 24)}-`);
  try {
    return planVm(spec, { backend, stateDir, accel: "auto", netnsSource: "config.json netns" });
  } catch (e) {
    await Deno.remove(stateDir, { recursive: true }).catch(() => {});
    throw e;
  }
}

/** Which networks the plan gives the VM and who provides them (as the plan decided it). */
export function networkSummary(_spec: SandboxSpec, plan: VmPlan): NetworkSummary {
  const netns = plan.netns !== undefined ? { netns: plan.netns } : {};
  const net = plan.network;
  switch (net.kind) {
    case "tsi":
      return {
        kind: "tsi",
        nics: [],
        provider: "libkrun TSI (guest sockets are host sockets)",
        ...netns,
      };
    case "passt":
      return {
        kind: "nics",
        nics: [{ name: "eth0", mode: "unixstream", socket: net.socket }],
        provider: "a private passt",
        ...netns,
      };
    case "pod":
      return {
        kind: "nics",
        nics: [{ name: "eth0", mode: "tap", socket: "" }],
        provider: "the netns's interface, handed to the VM (tap + tc redirect)",
        ...netns,
      };
    case "nics":
      return {
        kind: "nics",
        nics: net.nics.map((n) => ({ name: n.name, mode: n.mode, socket: n.socket })),
        provider: "explicit socket networks (io.containerd.nerdbox.network.N)",
        ...netns,
      };
  }
}
