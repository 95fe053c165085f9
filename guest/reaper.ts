/**
 * Zombie reaping for PID 1 (or a child subreaper) without stealing Deno's own children: peek
 * with waitid(WNOWAIT), reap a pid only when it is not one Deno.Command spawned; when the peeked
 * zombie is Deno's, scan /proc for other zombie children instead.
 */
import * as c from "./libc.ts";

/** Reaps every exited child not in `owned`; returns the pids reaped. */
export function reapOrphans(owned: Set<number>): number[] {
  const reaped: number[] = [];
  for (let i = 0; i < 1000; i++) {
    const pid = c.peekExitedChild();
    if (pid <= 0) return reaped;
    if (owned.has(pid)) break;
    if (c.reap(pid) === pid) reaped.push(pid);
  }
  // The first exited child is Deno's (its status is collected by Deno); look past it.
  for (const pid of zombieChildren(Deno.pid)) {
    if (!owned.has(pid) && c.reap(pid) === pid) reaped.push(pid);
  }
  return reaped;
}

/** Pids in state Z whose parent is `parent` (from /proc/<pid>/stat). */
export function zombieChildren(parent: number): number[] {
  const out: number[] = [];
  for (const e of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    let stat: string;
    try {
      stat = Deno.readTextFileSync(`/proc/${e.name}/stat`);
    } catch {
      continue;
    }
    const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    if (rest[0] === "Z" && Number(rest[1]) === parent) out.push(Number(e.name));
  }
  return out;
}

/** Starts reaping on SIGCHLD and every `intervalMs`; returns a stop function. */
export function startReaper(owned: Set<number>, intervalMs = 500): () => void {
  const run = () => {
    try {
      reapOrphans(owned);
    } catch { /* /proc unreadable: try again later */ }
  };
  const timer = setInterval(run, intervalMs);
  Deno.unrefTimer(timer);
  let listening = false;
  try {
    Deno.addSignalListener("SIGCHLD", run);
    listening = true;
  } catch { /* not allowed here: the timer does it */ }
  return () => {
    clearInterval(timer);
    if (listening) Deno.removeSignalListener("SIGCHLD", run);
  };
}
