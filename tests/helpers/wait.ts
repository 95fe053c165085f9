/** The one polling wait of the tests. */

/** A child run the wait depends on (tests/helpers/pod_run.ts PodRun fits). */
export interface WatchedRun {
  child: { kill(signo?: Deno.Signal): void };
  done: Promise<unknown>;
  output(): string;
}

/** How long and how often waitFor polls, and what may end it early. */
export interface WaitOptions {
  /** Give up after this long (default 60 s). */
  ms?: number;
  /** Poll interval (default 250 ms). */
  everyMs?: number;
  /** The wait fails when this run exits first; on timeout it is killed; its output is reported. */
  run?: WatchedRun;
  /** A throw from `fn` counts as "not yet" instead of failing the wait. */
  retryErrors?: boolean;
}

/**
 * Polls `fn` until it returns a value other than undefined; throws naming `what` at the deadline.
 * `opts` may be just the timeout in ms.
 */
export async function waitFor<T>(
  what: string,
  fn: () => Promise<T | undefined>,
  opts: number | WaitOptions = {},
): Promise<T> {
  const { ms = 60_000, everyMs = 250, run, retryErrors = false } = typeof opts === "number"
    ? { ms: opts }
    : opts;
  const deadline = Date.now() + ms;
  let exited = false;
  run?.done.then(() => exited = true, () => exited = true);
  while (Date.now() < deadline) {
    const v = retryErrors ? await fn().catch(() => undefined) : await fn();
    if (v !== undefined) return v;
    if (exited) throw new Error(`nerdbox run exited while waiting for ${what}:\n${run!.output()}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
  if (run) {
    try {
      run.child.kill("SIGKILL");
    } catch { /* already gone */ }
  }
  throw new Error(`timed out waiting for ${what}${run ? `:\n${run.output()}` : ""}`);
}

/**
 * Polls `problems` (every 200 ms, up to `ms`) until it lists none, then asserts the list is empty:
 * the failure shows what was still left at the deadline.
 */
export async function assertSettlesEmpty(
  problems: () => Promise<string[]>,
  ms = 15_000,
): Promise<void> {
  const deadline = Date.now() + ms;
  let left = await problems();
  while (left.length > 0 && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 200));
    left = await problems();
  }
  if (left.length > 0) throw new Error(`leftovers:\n${left.join("\n")}`);
}
