/**
 * The test command: runs `deno test` over the given paths (default: all of tests/), streams its
 * output, and ends with the plain summary line `N passed, N failed` that CI reads.
 */
import { recordTimings } from "./timings.ts";

const root = new URL("..", import.meta.url).pathname;
const junit = `${root}tests/.tmp/junit-${Deno.pid}.xml`;
await Deno.mkdir(`${root}tests/.tmp`, { recursive: true });
await Deno.remove(junit).catch(() => {});

const paths = Deno.args.length > 0 ? Deno.args : ["tests/"];
const child = new Deno.Command(Deno.execPath(), {
  args: ["test", "-A", "--no-check", `--junit-path=${junit}`, ...paths],
  cwd: root,
  stdin: "null",
}).spawn();
const { code } = await child.status;

let passed = 0;
let failed = 0;
try {
  const xml = await Deno.readTextFile(junit);
  await recordTimings(xml, `${root}tests/.tmp/timings.json`);
  const top = xml.match(/<testsuites[^>]*>/)?.[0] ?? "";
  const attr = (name: string) => Number(top.match(new RegExp(`${name}="(\\d+)"`))?.[1] ?? 0);
  failed = attr("failures") + attr("errors");
  passed = attr("tests") - failed;
} catch {
  failed = 1; // no report: deno test could not even load the tests
}
if (code !== 0 && failed === 0) failed = 1;
await Deno.remove(junit).catch(() => {});
console.log(`${passed} passed, ${failed} failed`);
Deno.exit(failed > 0 ? 1 : 0);
