/**
 * Host processes as /proc shows them: a process named by pid and kernel start time (field 22 of
 * `/proc/PID/stat`), so a reused pid is never taken for the process a record means. The one
 * reader of /proc/PID/stat in lib/.
 */

/** A process identified by pid and kernel start time (`/proc/PID/stat` field 22). */
export interface ProcRef {
  pid: number;
  start: string;
}

/** `[state, starttime]` from a /proc/PID/stat text. */
function parseStat(text: string): [string, string] {
  const rest = text.slice(text.lastIndexOf(")") + 2).split(" ");
  return [rest[0], rest[19]];
}

/** Reads `/proc/PID/stat`: [state, starttime], or undefined when the process is gone. */
function procStat(pid: number): [string, string] | undefined {
  try {
    return parseStat(Deno.readTextFileSync(`/proc/${pid}/stat`));
  } catch {
    return undefined;
  }
}

/** The ProcRef of a running pid (undefined when it is gone). */
export function procRef(pid: number): ProcRef | undefined {
  const s = procStat(pid);
  return s ? { pid, start: s[1] } : undefined;
}

/** True while the very process `ref` names runs (not a zombie, not a reused pid). */
export function isAlive(ref: ProcRef): boolean {
  const s = procStat(ref.pid);
  return s !== undefined && s[0] !== "Z" && s[1] === ref.start;
}

/** Field 22 (starttime) of /proc/<pid>/stat, or undefined when the process is gone. */
export async function processStartTime(pid: number): Promise<string | undefined> {
  try {
    return parseStat(await Deno.readTextFile(`/proc/${pid}/stat`))[1];
  } catch {
    return undefined;
  }
}
