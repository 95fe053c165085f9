/** The one /proc scanner of the tests: processes, their argv and their stat fields. */
import { type ProcRef, procRef } from "../../lib/proc.ts";

/** One process as /proc shows it. */
export interface ProcInfo {
  pid: number;
  /** argv (cmdline split at NUL; empty for kernel threads and zombies). */
  argv: string[];
  /** The command line with NULs as spaces (as the tests print it). */
  cmdline: string;
}

/** Every process but this one; a process that vanishes mid-scan is skipped. */
export async function listProcesses(): Promise<ProcInfo[]> {
  const out: ProcInfo[] = [];
  for await (const e of Deno.readDir("/proc")) {
    if (!/^\d+$/.test(e.name) || Number(e.name) === Deno.pid) continue;
    try {
      const raw = await Deno.readTextFile(`/proc/${e.name}/cmdline`);
      out.push({ pid: Number(e.name), argv: raw.split("\0"), cmdline: raw.replaceAll("\0", " ") });
    } catch { /* gone */ }
  }
  return out;
}

/** The fields of /proc/PID/stat after the command name (state first); undefined when gone. */
export async function procStat(pid: number): Promise<string[] | undefined> {
  try {
    const stat = await Deno.readTextFile(`/proc/${pid}/stat`);
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  } catch {
    return undefined;
  }
}

/** Every process (but this one) whose command line contains `needle`, as "PID: CMDLINE". */
export async function processesWith(needle: string): Promise<string[]> {
  return (await listProcesses()).filter((p) => p.cmdline.includes(needle))
    .map((p) => `${p.pid}: ${p.cmdline}`);
}

/** PIDs of processes whose command line contains `needle`. */
export async function processesMatching(needle: string): Promise<number[]> {
  return (await listProcesses()).filter((p) => p.cmdline.includes(needle)).map((p) => p.pid);
}

/** PIDs of the processes whose argv has `-address ADDRESS` (containerd's shims). */
export async function shimPidsOf(address: string, exclude: string[] = []): Promise<number[]> {
  return (await listProcesses()).filter((p) => {
    const i = p.argv.indexOf("-address");
    return i >= 0 && p.argv[i + 1] === address && !exclude.some((x) => p.argv.includes(x));
  }).map((p) => p.pid);
}

/** PIDs of the children of `pid` (by the parent field of /proc/PID/stat). */
export async function childrenOf(pid: number): Promise<number[]> {
  const out: number[] = [];
  for (const p of await listProcesses()) {
    if (Number((await procStat(p.pid))?.[1]) === pid) out.push(p.pid);
  }
  return out;
}

/** The identity (pid and start time) of a process that has exited: a dead owner for run records. */
export async function deadProcRef(): Promise<ProcRef> {
  const c = new Deno.Command("sleep", { args: ["30"], stdout: "null", stderr: "null" }).spawn();
  const ref = procRef(c.pid)!;
  c.kill("SIGKILL");
  await c.status;
  return ref;
}

/** A process and the share of one core it used over a sample. */
export interface BusyProcess {
  pid: number;
  /** Percent of one core (100 = one core busy the whole sample). */
  cpu: number;
  cmdline: string;
}

/** CPU ticks (user + system) a process has used; undefined when gone. */
async function cpuTicks(pid: number): Promise<number | undefined> {
  const f = await procStat(pid);
  // After the command name: state(3) ppid … utime(14) stime(15) → indexes 11 and 12.
  return f === undefined ? undefined : Number(f[11]) + Number(f[12]);
}

/**
 * Processes (but this one and `exclude`) that used at least `minCpu` percent of a core over
 * `sampleMs`, busiest first: what else is loading the host.
 */
export async function busyProcesses(
  sampleMs = 2000,
  minCpu = 20,
  exclude: number[] = [],
): Promise<BusyProcess[]> {
  const hz = 100; // USER_HZ on Linux
  const before = new Map<number, { ticks: number; cmdline: string }>();
  for (const p of await listProcesses()) {
    const ticks = await cpuTicks(p.pid);
    if (ticks !== undefined) before.set(p.pid, { ticks, cmdline: p.cmdline });
  }
  await new Promise((r) => setTimeout(r, sampleMs));
  const out: BusyProcess[] = [];
  for (const [pid, b] of before) {
    if (exclude.includes(pid)) continue;
    const ticks = await cpuTicks(pid);
    if (ticks === undefined) continue;
    const cpu = ((ticks - b.ticks) / hz) / (sampleMs / 1000) * 100;
    if (cpu >= minCpu) out.push({ pid, cpu: Math.round(cpu), cmdline: b.cmdline.slice(0, 160) });
  }
  return out.sort((a, b) => b.cpu - a.cpu);
}

/** What a finished command printed: stdout as bytes, stderr as text. */
export interface CommandOutput {
  code: number;
  stdout: Uint8Array;
  stderr: string;
}

/** Runs `cmd` to completion with `stdin` (closed after) or no stdin; never through a shell. */
export async function runCommand(
  cmd: string,
  args: string[],
  o: { cwd?: string; stdin?: Uint8Array; env?: Record<string, string> } = {},
): Promise<CommandOutput> {
  const child = new Deno.Command(cmd, {
    args,
    cwd: o.cwd,
    env: o.env,
    stdin: o.stdin ? "piped" : "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (o.stdin) {
    const w = child.stdin.getWriter();
    await w.write(o.stdin);
    await w.close();
  }
  const out = await child.output();
  return { code: out.code, stdout: out.stdout, stderr: new TextDecoder().decode(out.stderr) };
}

/** runCommand with stdout decoded as text too. */
export async function runCommandText(
  cmd: string,
  args: string[],
  o: { cwd?: string; stdin?: Uint8Array; env?: Record<string, string> } = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await runCommand(cmd, args, o);
  return { ...out, stdout: new TextDecoder().decode(out.stdout) };
}
