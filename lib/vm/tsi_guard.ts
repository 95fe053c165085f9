/**
 * Enforces the TSI exposure policy (docs/libkrun.md) in the VMM process. An empty
 * `krun_set_port_map` is libkrun's way to publish nothing, but this libkrun build (like upstream
 * 1.17-1.19) binds guest listeners whose port is not in the map 1:1 on the host anyway. So the
 * vmm child, before krun_start_enter, moves itself into a cgroup of its own and attaches bind
 * filters (ffi/bpf_bind.ts) that allow only port 0 and the published host ports: a guest listen()
 * on any other port gets EPERM from the host's bind(), as with libkrun 1.16.0's empty map.
 */
import { attachBindFilter } from "../../ffi/bpf_bind.ts";

/** The file in the state dir naming the cgroup (the parent removes it after the VMM). */
export const TSI_CGROUP_FILE = "tsi-cgroup";
/** Where cgroup v2 is mounted: /sys/fs/cgroup, or /sys/fs/cgroup/unified on hybrid hosts. */
export function cgroup2Mount(): string {
  for (const line of Deno.readTextFileSync("/proc/self/mountinfo").split("\n")) {
    const [pre, post] = line.split(" - ");
    if (post?.split(" ")[0] === "cgroup2") return pre.split(" ")[4];
  }
  throw new Error("cgroup v2 is not mounted (no cgroup2 in /proc/self/mountinfo)");
}

/** This process's cgroup v2 path (`0::/…` in /proc/self/cgroup). */
function ownCgroup(): string {
  const line = Deno.readTextFileSync("/proc/self/cgroup").split("\n").find((l) =>
    l.startsWith("0::")
  );
  if (!line) throw new Error("no cgroup v2 membership in /proc/self/cgroup");
  return line.slice(3).replace(/\/$/, "");
}

/**
 * Moves this process into `<own cgroup>/nerdbox-tsi-<pid>` and allows bind() only to port 0 and
 * `hostPorts` there; records the cgroup in `<stateDir>/tsi-cgroup`. Throws naming what failed.
 */
export function guardTsiListeners(stateDir: string, hostPorts: number[]): string {
  const dir = `${cgroup2Mount()}${ownCgroup()}/nerdbox-tsi-${Deno.pid}`;
  Deno.mkdirSync(dir);
  Deno.writeTextFileSync(`${stateDir}/${TSI_CGROUP_FILE}`, dir);
  Deno.writeTextFileSync(`${dir}/cgroup.procs`, String(Deno.pid));
  attachBindFilter(dir, hostPorts);
  return dir;
}

/** Removes the cgroup a state dir's VMM was guarded in, once it is empty (idempotent). */
export async function removeTsiCgroup(stateDir: string): Promise<void> {
  const dir = (await Deno.readTextFile(`${stateDir}/${TSI_CGROUP_FILE}`).catch(() => "")).trim();
  if (!dir.startsWith("/sys/fs/cgroup/") || !/\/nerdbox-tsi-\d+$/.test(dir)) return;
  for (let i = 0; i < 50; i++) {
    try {
      await Deno.remove(dir);
      return;
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return;
      await new Promise((r) => setTimeout(r, 100)); // EBUSY until the VMM has fully exited
    }
  }
}
