/** Runs the real `bin/nerdbox` from this checkout and captures its output. */
const ROOT = new URL("../../", import.meta.url).pathname;

/** bin/nerdbox of this checkout. */
export const NERDBOX = `${ROOT}bin/nerdbox`;

/** What a nerdbox invocation did. */
export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `bin/nerdbox ...args` (stdin closed) with extra env. */
export async function nerdbox(
  args: string[],
  env: Record<string, string> = {},
): Promise<CliResult> {
  const out = await new Deno.Command(NERDBOX, {
    args,
    env,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  })
    .output();
  return {
    code: out.code,
    stdout: new TextDecoder().decode(out.stdout),
    stderr: new TextDecoder().decode(out.stderr),
  };
}

/** PIDs of processes whose command line contains `needle`. */
export async function processesMatching(needle: string): Promise<number[]> {
  const pids: number[] = [];
  for await (const e of Deno.readDir("/proc")) {
    if (!/^\d+$/.test(e.name) || Number(e.name) === Deno.pid) continue;
    try {
      const cmd = (await Deno.readTextFile(`/proc/${e.name}/cmdline`)).replaceAll("\0", " ");
      if (cmd.includes(needle)) pids.push(Number(e.name));
    } catch {
      // gone
    }
  }
  return pids;
}
