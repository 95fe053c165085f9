/**
 * Test peer run inside a test netns: an HTTP server on HOST:PORT that answers every request with
 * `peer-ok <nonce> <path>` and logs `req <path> <client address>` on stdout. Prints `ready` first.
 * Usage: deno run -A qemu_http_peer.ts HOST PORT NONCE
 */
const [hostname, port, nonce] = Deno.args;
Deno.serve({
  hostname,
  port: Number(port),
  onListen: () => console.log("ready"),
}, (req, info) => {
  const path = new URL(req.url).pathname;
  console.log(`req ${path} ${(info.remoteAddr as Deno.NetAddr).hostname}`);
  return new Response(`peer-ok ${nonce} ${path}\n`, { headers: { connection: "close" } });
});
