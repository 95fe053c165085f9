/**
 * Runs a snippet against the real libkrun in a fresh Deno process: for anything that is once per
 * process (the logger), ends the process (krun_start_enter) or might crash it (NULL pointers).
 */
const ROOT = new URL("../../", import.meta.url).pathname;

/** The outcome of a snippet run. */
export interface SnippetResult {
  code: number;
  signal: Deno.Signal | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs `body` as a module with `lib` (a Libkrun loaded from the default location), the ffi module
 * as `ffi` and `locate` available. Top-level await allowed.
 */
export async function runLibkrunSnippet(
  body: string,
  env: Record<string, string> = {},
): Promise<SnippetResult> {
  const dir = await Deno.makeTempDir({ prefix: "nb-krun-snippet-" });
  try {
    const file = `${dir}/snippet.ts`;
    await Deno.writeTextFile(
      file,
      [
        `import * as ffi from "${ROOT}ffi/libkrun.ts";`,
        `import * as locate from "${ROOT}lib/vm/libkrun_locate.ts";`,
        `const lib = locate.loadLibkrun();`,
        `void ffi; void lib;`,
        body,
      ].join("\n"),
    );
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--no-check", "--quiet", file],
      env,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    return {
      code: out.code,
      signal: out.signal,
      stdout: new TextDecoder().decode(out.stdout),
      stderr: new TextDecoder().decode(out.stderr),
    };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}
