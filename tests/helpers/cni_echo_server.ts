/**
 * Test helper run inside a netns: a TCP server on 0.0.0.0:PORT that answers each connection with
 * `hello from <listening address> to <client address>\n`. Prints `ready` once listening.
 */
const port = Number(Deno.args[0]);
const listener = Deno.listen({ hostname: "0.0.0.0", port });
console.log("ready");
for await (const conn of listener) {
  const local = conn.localAddr as Deno.NetAddr;
  const remote = conn.remoteAddr as Deno.NetAddr;
  await conn.write(new TextEncoder().encode(`hello from ${local.hostname} to ${remote.hostname}\n`))
    .catch(() => {});
  conn.close();
}
