/**
 * What every detached helper daemon (passt, virtiofsd) needs around Deno.Command: quiet stdio
 * with stderr kept, the tail of that stderr for error messages, a stop that escalates from
 * SIGTERM to SIGKILL, and a socket check. Imports nothing.
 */

/** Command options for a helper: no stdin/stdout, stderr piped (read it with streamTail). */
export function helperCommandOptions(args: string[]): Deno.CommandOptions {
  return { args, stdin: "null", stdout: "null", stderr: "piped", detached: true };
}

/** Reads `stream` to the end in the background, keeping its last `max` characters. */
export function streamTail(stream: ReadableStream<Uint8Array>, max = 4096): () => string {
  let buf = "";
  const dec = new TextDecoder();
  (async () => {
    for await (const c of stream) buf = (buf + dec.decode(c, { stream: true })).slice(-max);
  })().catch(() => {});
  return () => buf;
}

/** A spawned helper's exit, whether it has happened, and how to end it. */
export interface HelperWatch {
  /** Resolves with the helper's status once it exited. */
  exited: Promise<Deno.CommandStatus>;
  /** True once the helper exited. */
  done(): boolean;
  /** SIGTERM, then SIGKILL after `killAfterMs`; resolves when the helper exited. */
  stop(): Promise<void>;
}

/** Watches `child`: its exit, and a stop that sends SIGKILL `killAfterMs` after SIGTERM. */
export function watchHelper(child: Deno.ChildProcess, killAfterMs: number): HelperWatch {
  let done = false;
  const exited = child.status.finally(() => {
    done = true;
  });
  const signal = (sig: Deno.Signal) => {
    try {
      Deno.kill(child.pid, sig);
    } catch { /* already gone */ }
  };
  return {
    exited,
    done: () => done,
    stop: async () => {
      if (done) return;
      signal("SIGTERM");
      const t = setTimeout(() => signal("SIGKILL"), killAfterMs);
      await exited;
      clearTimeout(t);
    },
  };
}

/** SIGKILL to `child` (if it is still there). */
export function killHard(child: Deno.ChildProcess): void {
  try {
    child.kill("SIGKILL");
  } catch { /* already gone */ }
}

/** Kills `child` with SIGKILL after `ms` unless the returned cancel is called first. */
export function killAfter(child: Deno.ChildProcess, ms: number): () => void {
  const t = setTimeout(() => killHard(child), ms);
  return () => clearTimeout(t);
}

/** Whether `path` is a UNIX socket (false when it is absent or unreadable). */
export async function isSocket(path: string): Promise<boolean> {
  return (await Deno.lstat(path).catch(() => null))?.isSocket === true;
}
