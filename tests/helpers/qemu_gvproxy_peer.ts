/**
 * Test peer: runs one libgvproxy instance in this process (start it inside a test netns so that
 * gvproxy's NAT dials from there). Argument: the GvproxyConfig as JSON. Prints `ready <version>`,
 * then the stats JSON and exits when stdin closes.
 */
import { type GvproxyConfig, startGvproxy } from "../../lib/net/gvproxy.ts";

const cfg = JSON.parse(Deno.args[0]) as GvproxyConfig;
const g = await startGvproxy(cfg);
console.log(`ready ${g.version}`);
for await (const _ of Deno.stdin.readable) {
  // wait for EOF
}
console.log(JSON.stringify(g.stats() ?? {}));
await g.stop();
