/**
 * The processes inside a named netns: finding them through /proc (as `ip netns pids` does) and
 * ending them before the netns is deleted.
 */
import { NETNS_RUN_DIR } from "./netns.ts";

/**
 * Pids of the processes in the named netns: those whose `/proc/PID/ns/net` is the netns file's
 * nsfs inode (what `ip netns pids` does, without spawning it: one process less per detach).
 */
export function netnsPids(name: string, dir = NETNS_RUN_DIR): number[] {
  let ns: Deno.FileInfo;
  try {
    ns = Deno.statSync(`${dir}/${name}`);
  } catch {
    return [];
  }
  const out: number[] = [];
  for (const e of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    const pid = Number(e.name);
    if (pid <= 1 || pid === Deno.pid) continue;
    try {
      const st = Deno.statSync(`/proc/${pid}/ns/net`);
      if (st.ino === ns.ino && st.dev === ns.dev) out.push(pid);
    } catch { /* gone, or a kernel thread */ }
  }
  return out;
}

/** Kills every process still in the named netns (SIGTERM, then SIGKILL after 2 s). */
export async function killNetnsProcesses(name: string): Promise<void> {
  const pids = () => Promise.resolve(netnsPids(name));
  let left = await pids();
  if (left.length === 0) return;
  for (const p of left) {
    try {
      Deno.kill(p, "SIGTERM");
    } catch { /* gone */ }
  }
  for (let i = 0; i < 40 && left.length > 0; i++) {
    await new Promise((r) => setTimeout(r, 50));
    left = await pids();
  }
  for (const p of left) {
    try {
      Deno.kill(p, "SIGKILL");
    } catch { /* gone */ }
  }
}
