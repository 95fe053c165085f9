/**
 * Test helper for the runtime command line: run `bin/nerdbox` verbs (in a cwd, with a root),
 * read OCI state, wait for a status, and check a sandbox left nothing (dir, supervisor, VMM).
 */
import { NERDBOX } from "./nerdbox_cli.ts";
import { isAlive, procRef } from "../../lib/proc.ts";

/** One verb's result. */
export interface VerbResult {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs `nerdbox ARGS` in `cwd` (stdin closed). Output goes through files, not pipes: `create`
 * hands its stdout/stderr to the sandbox's supervisor (as runc does), which would hold a pipe open
 * long after the verb returned.
 */
export async function nb(args: string[], cwd?: string): Promise<VerbResult> {
  const tmp = await Deno.makeTempDir({ prefix: "nbxverb-" });
  try {
    const o = await new Deno.Command("sh", {
      args: ["-c", 'exec "$0" "$@" >"$NBX_OUT" 2>"$NBX_ERR"', NERDBOX, ...args],
      env: { NBX_OUT: `${tmp}/out`, NBX_ERR: `${tmp}/err` },
      ...(cwd ? { cwd } : {}),
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).output();
    return {
      code: o.code,
      stdout: await Deno.readTextFile(`${tmp}/out`),
      stderr: await Deno.readTextFile(`${tmp}/err`),
    };
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
}

/** Runs a verb that must succeed; throws with its output otherwise. */
export async function nbOk(args: string[], cwd?: string): Promise<string> {
  const r = await nb(args, cwd);
  if (r.code !== 0) {
    throw new Error(`nerdbox ${args.join(" ")} exited ${r.code}:\n${r.stdout}${r.stderr}`);
  }
  return r.stdout;
}

/** OCI state of `id` (root flags first). */
export async function ociState(
  rootArgs: string[],
  id: string,
): Promise<{ status: string; pid: number; id: string; bundle: string }> {
  return JSON.parse(await nbOk([...rootArgs, "state", id]));
}

/** True while `pid` is a live (non-zombie) process. */
export function pidAlive(pid: number): boolean {
  const ref = procRef(pid);
  return ref !== undefined && isAlive(ref);
}

/** Polls until `fn` is true or `ms` passes; returns whether it became true. */
export async function until(fn: () => boolean | Promise<boolean>, ms = 30_000): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await fn()) return true;
    await new Promise((r) => setTimeout(r, 200));
  }
  return await fn();
}

/** Runs a command to completion; its stdout (throws on failure). */
export async function sh(
  cmd: string,
  args: string[],
  env?: Record<string, string>,
  stdin?: string,
) {
  const c = new Deno.Command(cmd, {
    args,
    ...(env ? { env } : {}),
    stdin: stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (stdin !== undefined) {
    const w = c.stdin.getWriter();
    await w.write(new TextEncoder().encode(stdin));
    await w.close();
  }
  const o = await c.output();
  const d = new TextDecoder();
  if (!o.success) {
    throw new Error(`${cmd} ${args.join(" ")}: ${d.decode(o.stderr)}${d.decode(o.stdout)}`);
  }
  return d.decode(o.stdout);
}
