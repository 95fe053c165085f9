/**
 * `deno task compile`: builds the single binary dist/nerdbox (plus the containerd-shim-nerdbox-v1
 * symlink beside it). `deno compile` needs the denort runtime: it downloads it, or takes DENORT_BIN.
 */
import { GUEST_SHARED_SOURCES } from "../lib/vm/guest_image.ts";

const root = new URL("..", import.meta.url).pathname;
const out = `${root}dist/nerdbox`;
await Deno.mkdir(`${root}dist`, { recursive: true });

const env: Record<string, string> = {};
const denort = Deno.env.get("DENORT_BIN");
if (denort) env.DENORT_BIN = denort;

const result = await new Deno.Command(Deno.execPath(), {
  args: [
    "compile",
    "-A",
    "--no-check",
    "--include",
    `${root}guest`,
    ...GUEST_SHARED_SOURCES.flatMap((f) => ["--include", `${root}${f}`]),
    "--output",
    out,
    `${root}main.ts`,
  ],
  env,
  cwd: root,
  stdin: "null",
  stderr: "piped",
}).output();

const stderr = new TextDecoder().decode(result.stderr);
if (!result.success) {
  console.error(stderr.trim());
  if (/denort|download|dl\.deno\.land|failed to fetch|error sending request/i.test(stderr)) {
    console.error(
      "\ncompile: deno compile could not fetch its runtime (denort) from this machine. " +
        "Download the denort zip for Deno " + Deno.version.deno +
        " elsewhere and set DENORT_BIN=/path/to/denort, or run from source with bin/nerdbox.",
    );
  }
  Deno.exit(1);
}
const link = `${root}dist/containerd-shim-nerdbox-v1`;
await Deno.remove(link).catch(() => {});
await Deno.symlink("nerdbox", link);
console.log(`compile: wrote ${out} and ${link}`);
