/**
 * Helpers of the libkrun e2e cases (tests/nested/cases/*_l1.ts, run inside L1 by the nested rig):
 * `nerdbox run --backend libkrun` from this checkout with generous boot timeouts, a busybox rootfs
 * per case, and a check that nothing (state dir, VMM) is left behind.
 */
import assert from "node:assert/strict";
import { makeBusyboxRootfs } from "../../helpers/rootfs.ts";
import { NERDBOX, processesMatching } from "../../helpers/nerdbox_cli.ts";
import { LIBKRUN_TEST_BOOT_TIMEOUT_MS } from "../../helpers/kvm_guests.ts";
import { RUN_STATE_ROOT } from "../../../lib/cli/run.ts";

/** Environment every libkrun run of these cases gets. */
export const KRUN_ENV = { NERDBOX_BOOT_TIMEOUT_MS: String(LIBKRUN_TEST_BOOT_TIMEOUT_MS) };

/** What a run did. */
export interface KrunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** `nerdbox run --name ID --backend libkrun ARGS…` to completion (stdin: `input` or closed). */
export async function krun(
  id: string,
  args: string[],
  opts: { input?: string; backend?: string | null; env?: Record<string, string> } = {},
): Promise<KrunResult> {
  const child = spawnKrun(id, args, { ...opts, stdin: opts.input !== undefined });
  if (opts.input !== undefined) {
    const w = child.stdin.getWriter();
    await w.write(new TextEncoder().encode(opts.input));
    await w.close();
  }
  const out = await child.output();
  return {
    code: out.code,
    stdout: new TextDecoder().decode(out.stdout),
    stderr: new TextDecoder().decode(out.stderr),
  };
}

/** Spawns `nerdbox run` (piped stdout/stderr) for cases that act while it runs. */
export function spawnKrun(
  id: string,
  args: string[],
  opts: { stdin?: boolean; backend?: string | null; env?: Record<string, string> } = {},
): Deno.ChildProcess {
  const backend = opts.backend === undefined
    ? ["--backend", "libkrun"]
    : opts.backend === null
    ? []
    : ["--backend", opts.backend];
  return new Deno.Command(NERDBOX, {
    args: ["run", "--name", id, ...backend, ...args],
    env: { ...KRUN_ENV, ...opts.env },
    stdin: opts.stdin ? "piped" : "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
}

/** Resolves with everything read once `re` matched the stream's text (rejects at EOF/timeout). */
export function waitFor(
  stream: ReadableStream<Uint8Array>,
  re: RegExp,
  ms = LIBKRUN_TEST_BOOT_TIMEOUT_MS,
): { matched: Promise<string>; text: () => string; done: Promise<void> } {
  let text = "";
  const got = Promise.withResolvers<string>();
  const timer = setTimeout(
    () => got.reject(new Error(`timed out waiting for ${re}:\n${text}`)),
    ms,
  );
  const done = (async () => {
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
      text += chunk;
      if (re.test(text)) got.resolve(text);
    }
    got.reject(new Error(`stream ended before ${re}:\n${text}`));
  })().finally(() => clearTimeout(timer));
  const matched = got.promise.finally(() => clearTimeout(timer));
  matched.catch(() => {}); // a stream nobody waits on must not be an unhandled rejection
  return { matched, text: () => text, done };
}

/** Runs fn with a fresh busybox rootfs (with /www/index.html) and id; then checks nothing is left. */
export async function withRootfs(
  prefix: string,
  fn: (rootfs: string, id: string) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: `nb-l1-${prefix}-` });
  const id = `l1-${prefix}-${crypto.randomUUID().slice(0, 8)}`;
  try {
    const rootfs = await makeBusyboxRootfs(`${dir}/rootfs`);
    await Deno.mkdir(`${rootfs}/www`, { recursive: true });
    await Deno.writeTextFile(`${rootfs}/www/index.html`, `guest-page ${id}\n`);
    await fn(rootfs, id);
  } finally {
    await Deno.remove(dir, { recursive: true });
    await assertNothingLeft(id);
  }
}

/** No state dir and no process of run `id` remains. */
export async function assertNothingLeft(id: string): Promise<void> {
  const left: string[] = [];
  try {
    for await (const e of Deno.readDir(RUN_STATE_ROOT)) {
      if (e.name.startsWith(`${id.slice(0, 24)}-`)) left.push(e.name);
    }
  } catch {
    // no state root
  }
  assert.deepEqual(left, [], "the state dir is removed");
  assert.deepEqual(
    await processesMatching(`${RUN_STATE_ROOT}/${id.slice(0, 24)}-`),
    [],
    "no VMM left",
  );
}

/** GETs `url` once; the body, or undefined when the connection is refused/reset. */
export async function httpGet(url: string, ms = 5000): Promise<string | undefined> {
  try {
    const r = await fetch(url, { signal: AbortSignal.timeout(ms) });
    return await r.text();
  } catch {
    return undefined;
  }
}

/** Polls `url` until it answers (body) or `ms` passes (undefined). */
export async function pollHttp(
  url: string,
  ms = LIBKRUN_TEST_BOOT_TIMEOUT_MS,
): Promise<string | undefined> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    const body = await httpGet(url, 3000);
    if (body !== undefined) return body;
    await new Promise((r) => setTimeout(r, 500));
  }
  return undefined;
}

/** TCP ports something listens on in this netns (`ss -Htln`). */
export async function listeningPorts(): Promise<number[]> {
  const out = await new Deno.Command("ss", { args: ["-Htln"], stdout: "piped" }).output();
  return new TextDecoder().decode(out.stdout).split("\n").flatMap((l) => {
    const m = l.trim().split(/\s+/)[3]?.match(/:(\d+)$/);
    return m ? [Number(m[1])] : [];
  });
}
