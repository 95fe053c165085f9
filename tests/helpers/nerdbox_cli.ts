/** Runs the real `bin/nerdbox` from this checkout and captures its output. */
import { processesMatching } from "./procs.ts";

export { processesMatching };
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

/** The usual flags of a `nerdbox run` argv (runArgv). */
export interface RunArgvOptions {
  name?: string;
  backend?: string;
  accel?: string;
  /** Further flags, in order, before the rootfs. */
  flags?: string[];
}

/** `run [--name N] [--backend B] [--accel A] FLAGS… ROOTFS -- CMD…`, the argv tests pass to bin/nerdbox. */
export function runArgv(rootfs: string, cmd: string[], opts: RunArgvOptions = {}): string[] {
  return [
    "run",
    ...(opts.name !== undefined ? ["--name", opts.name] : []),
    ...(opts.backend !== undefined ? ["--backend", opts.backend] : []),
    ...(opts.accel !== undefined ? ["--accel", opts.accel] : []),
    ...(opts.flags ?? []),
    rootfs,
    "--",
    ...cmd,
  ];
}
