/**
 * Port forwarding's guest half: which TCP ports something in the VM listens on (from
 * /proc/net/tcp and tcp6), and a connection to one of them on the VM's loopback that runs as an
 * exec session (its stdin/stdout are the connection's bytes), so the host can carry a forwarded
 * connection over the control channel.
 */
import type { Running } from "./workload.ts";

/** TCP state LISTEN in /proc/net/tcp. */
const TCP_LISTEN = "0A";

/** The ports of LISTEN sockets in /proc/net/tcp-format `text` (any local address). */
export function listeningPorts(text: string): number[] {
  const ports = new Set<number>();
  for (const line of text.split("\n").slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 4 || f[3] !== TCP_LISTEN) continue;
    const port = Number.parseInt(f[1].split(":")[1] ?? "", 16);
    if (Number.isInteger(port) && port > 0) ports.add(port);
  }
  return [...ports].sort((a, b) => a - b);
}

/** Every TCP port listened on in this network namespace (IPv4 and IPv6). */
export function readListeningPorts(): number[] {
  const all = new Set<number>();
  for (const f of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    let text = "";
    try {
      text = Deno.readTextFileSync(f);
    } catch { /* no IPv6 */ }
    for (const p of listeningPorts(text)) all.add(p);
  }
  return [...all].sort((a, b) => a - b);
}

/** An error dialing: the session ends with status 1 and this message. */
export class DialError extends Error {
  /** The session's exit status. */
  readonly code = 1;
}

/**
 * Connects to 127.0.0.1:`port` and returns the connection as session `id`: stdin is written to
 * it, what it sends goes out through `output` as stdout, SIGNAL closes it, and it is done (0)
 * once the peer closed its side.
 */
export async function dialLoopback(
  id: number,
  port: number,
  output: (proc: number, fd: 1 | 2, data: Uint8Array) => Promise<void>,
): Promise<Running> {
  let conn: Deno.TcpConn;
  try {
    conn = await Deno.connect({ hostname: "127.0.0.1", port });
  } catch (err) {
    throw new DialError(`dial 127.0.0.1:${port}: ${err instanceof Error ? err.message : err}`);
  }
  const close = () => {
    try {
      conn.close();
    } catch { /* closed */ }
  };
  const writer = conn.writable.getWriter();
  const done = (async () => {
    try {
      for await (const chunk of conn.readable) await output(id, 1, chunk);
    } catch { /* reset or closed by a signal */ }
    close();
    return 0;
  })();
  return {
    id,
    pid: 0,
    stdin: (data) => writer.write(data).catch(() => {}),
    stdinEof: () => conn.closeWrite().catch(() => {}),
    signal: close,
    resize: () => {},
    done,
  };
}
