/**
 * `nerdbox inspect --sandbox ID [--root DIR] [--json]`: what a runtime-CLI sandbox is — status,
 * pids, backend, and its network: which provider, which NICs, which netns, and the pod IP (the
 * addresses of the netns's interfaces, which the VM answers at).
 */
import { parseArgs } from "node:util";
import { withNetns } from "../net/netns.ts";
import {
  currentStatus,
  readRecord,
  RUNTIME_STATE_ROOT,
  type SandboxRecord,
} from "../runtime/state.ts";

/** The pod addresses: global IPv4/IPv6 addresses in the sandbox's netns (none without one). */
export function podAddresses(netns: string | undefined): string[] {
  if (netns === undefined) return [];
  try {
    return withNetns(netns, () => Deno.networkInterfaces())
      .filter((i) => i.name !== "lo" && !i.address.startsWith("fe80"))
      .map((i) => `${i.address}/${i.cidr.split("/")[1]} (${i.name})`);
  } catch {
    return [];
  }
}

/** The sandbox as a plain object (the `--json` output). */
export function describeSandbox(rec: SandboxRecord) {
  const status = currentStatus(rec);
  const live = status === "created" || status === "running";
  return {
    id: rec.id,
    status,
    bundle: rec.bundle,
    created: rec.created,
    pid: live ? rec.supervisor?.pid ?? 0 : 0,
    vmmPid: live ? rec.vmmPid ?? null : null,
    backend: rec.backend ?? null,
    network: rec.network ?? null,
    podIps: live ? podAddresses(rec.network?.netns) : [],
    ...(rec.exitCode !== undefined ? { exitCode: rec.exitCode } : {}),
    ...(rec.error !== undefined ? { error: rec.error } : {}),
  };
}

/** Entry point (args of `inspect`, including `--sandbox`). */
export async function main(args: string[]): Promise<number> {
  let values: { sandbox?: string; root?: string; json?: boolean };
  try {
    ({ values } = parseArgs({
      args,
      options: {
        sandbox: { type: "string" },
        root: { type: "string" },
        json: { type: "boolean" },
      },
      strict: true,
    }));
  } catch (e) {
    console.error(`nerdbox inspect: ${(e as Error).message}`);
    return 1;
  }
  let rec: SandboxRecord;
  try {
    rec = await readRecord(values.root ?? RUNTIME_STATE_ROOT, values.sandbox ?? "");
  } catch (e) {
    console.error(`nerdbox inspect: ${(e as Error).message}`);
    return 1;
  }
  const d = describeSandbox(rec);
  if (values.json) {
    console.log(JSON.stringify(d, null, 2));
    return 0;
  }
  const lines = [
    `sandbox ${d.id}: ${d.status}${d.exitCode !== undefined ? ` (exit ${d.exitCode})` : ""}`,
    `  bundle:   ${d.bundle}`,
    `  pid:      ${d.pid} (supervisor)${d.vmmPid ? `, VMM ${d.vmmPid}` : ""}`,
    `  backend:  ${d.backend ?? "not planned"}`,
  ];
  if (d.network) {
    lines.push(`  network:  ${d.network.kind}, provider: ${d.network.provider}`);
    if (d.network.netns) lines.push(`  netns:    ${d.network.netns}`);
    for (const n of d.network.nics) lines.push(`  nic:      ${n.name} ${n.mode} ${n.socket}`);
  }
  lines.push(`  pod IP:   ${d.podIps.length ? d.podIps.join(", ") : "none"}`);
  if (d.error) lines.push(`  error:    ${d.error}`);
  console.log(lines.join("\n"));
  return 0;
}
