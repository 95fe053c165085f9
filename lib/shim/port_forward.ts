/**
 * CRI port-forward for a pod VM under QEMU: containerd's PortForward dials `localhost:<port>` in
 * the pod's network namespace (the host's for a host-network pod), where nothing of the VM
 * listens. The mirror asks the guest every POLL_MS which TCP ports something in the VM listens on
 * and listens on 127.0.0.1 at each of them in that namespace; every accepted connection is carried
 * over the guest channel (an exec session with `dial`) to the same port on the VM's loopback.
 * A port that is taken in the namespace is skipped (logged once). Under libkrun, TSI already
 * listens in the VMM's namespace.
 */
import type { VmHandle } from "../vm/types.ts";
import { withNetns } from "../net/netns.ts";

/** How often the guest is asked for its listening ports. */
const POLL_MS = 1000;

/** A running mirror; `stop` closes every listener and forwarded connection. */
export interface PortMirror {
  stop(): void;
}

/** The dial "process" a forwarded connection runs as in the guest (never executed). */
const DIAL_PROCESS = { env: [], cwd: "/", uid: 0, gid: 0, terminal: false };

/** Carries one accepted connection to `port` on the VM's loopback until either side closes. */
async function forward(vm: VmHandle, conn: Deno.Conn, port: number): Promise<void> {
  try {
    const proc = await vm.exec!({ ...DIAL_PROCESS, args: ["dial", String(port)] }, {
      stdin: conn.readable,
      stdout: conn.writable,
      stderr: new WritableStream(),
      terminal: false,
    }, { dial: port });
    await proc.exited;
  } catch { /* the guest refused the connection: closing it tells the peer */ }
  try {
    conn.close();
  } catch { /* closed with its streams */ }
}

/**
 * Mirrors the VM's listening TCP ports onto 127.0.0.1 in `netns` (undefined: the shim's own
 * namespace) until stopped or the VM ends.
 */
export function startPortMirror(
  vm: VmHandle,
  netns: string | undefined,
  log: (msg: string) => void,
): PortMirror {
  const listeners = new Map<number, Deno.TcpListener>();
  const skipped = new Set<number>();
  let stopped = false;
  const listen = (port: number): Deno.TcpListener => {
    const open = () => Deno.listen({ hostname: "127.0.0.1", port, transport: "tcp" });
    return netns ? withNetns(netns, open) : open();
  };
  const serve = async (l: Deno.TcpListener, port: number) => {
    try {
      for await (const conn of l) void forward(vm, conn, port);
    } catch { /* closed */ }
  };
  const sync = async () => {
    let ports: number[];
    try {
      ports = await vm.listening!();
    } catch {
      return; // booting, or ended: the next round (or stop) settles it
    }
    if (stopped) return;
    const want = new Set(ports);
    for (const [port, l] of listeners) {
      if (want.has(port)) continue;
      listeners.delete(port);
      l.close();
    }
    for (const port of want) {
      if (listeners.has(port) || skipped.has(port)) continue;
      try {
        const l = listen(port);
        listeners.set(port, l);
        void serve(l, port);
      } catch (err) {
        skipped.add(port);
        log(`port-forward: cannot listen on 127.0.0.1:${port}: ${(err as Error).message}`);
      }
    }
  };
  let timer: ReturnType<typeof setTimeout> | undefined;
  const loop = async () => {
    await sync();
    if (!stopped) timer = setTimeout(loop, POLL_MS);
  };
  void loop();
  void vm.exited.finally(() => mirror.stop());
  const mirror: PortMirror = {
    stop() {
      if (stopped) return;
      stopped = true;
      clearTimeout(timer);
      for (const l of listeners.values()) {
        try {
          l.close();
        } catch { /* closed */ }
      }
      listeners.clear();
    },
  };
  return mirror;
}
