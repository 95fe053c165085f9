/** A terminal for a command under test (script(1)) and the check that a workload owns it. */
import { doesNotMatch, equal, notEqual, ok } from "node:assert/strict";

/** Runs the shell command `cmd` under script(1), which gives it a terminal of its own. */
export async function underScript(
  cmd: string,
  ms = 170_000,
): Promise<{ code: number; out: string }> {
  const o = await new Deno.Command("script", {
    args: ["-qfec", cmd, "/dev/null"],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(ms),
  }).output();
  return { code: o.code, out: new TextDecoder().decode(o.stdout) };
}

/**
 * Asserts the output of `set -- $(cat /proc/$$/stat); echo S$6:P$$:T$7:E` (under `sh -i`): the
 * shell leads its session, has a controlling tty, and job control did not complain.
 */
export function assertSessionLeader(out: string): void {
  doesNotMatch(out, /can't access tty|job control turned off/);
  const m = /S(\d+):P(\d+):T(\d+):E/.exec(out);
  ok(m, out);
  equal(m[1], m[2], "session leader");
  notEqual(m[3], "0", "tty_nr");
}
