/**
 * Real network providers for tests: passt in a private network namespace, and libgvproxy loaded
 * in-process. Both serve a UNIX stream socket with QEMU framing (4-byte big-endian length, then
 * an Ethernet frame) and accept one VM connection. `close()` removes everything they made.
 */

/** A running provider. */
export interface Provider {
  /** The UNIX socket the VM connects to. */
  socket: string;
  /** The provider's gateway address (answers ARP). */
  gatewayIp: string;
  /** The address the provider expects the guest to use. */
  guestIp: string;
  /** Stops the provider and removes its netns, socket and directory. */
  close(): Promise<void>;
}

async function run(cmd: string, args: string[]): Promise<void> {
  const out = await new Deno.Command(cmd, { args, stdin: "null", stdout: "null", stderr: "piped" })
    .output();
  if (!out.success) {
    throw new Error(
      `${cmd} ${args.join(" ")} failed (exit ${out.code}): ${
        new TextDecoder().decode(out.stderr).trim()
      }`,
    );
  }
}

/** Waits until `path` exists (as anything), or throws after `ms`. */
export async function waitForPath(path: string, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    try {
      await Deno.lstat(path);
      return;
    } catch {
      await new Promise((r) => setTimeout(r, 10));
    }
  }
  throw new Error(`${path} did not appear within ${ms} ms`);
}

/** A short unique name for netns and temp dirs of one test area. */
export function uniqueName(prefix: string): string {
  return `${prefix}-${Deno.pid.toString(36)}${Math.random().toString(36).slice(2, 7)}`;
}

/**
 * Starts `passt -f -q -4 -1 -s SOCK` inside a fresh netns (veth with 192.168.77.2/24 and a default
 * route via 192.168.77.1, which passt needs). The socket directory is mode 1777 because passt drops
 * to nobody before binding. `passtArgs` are added to passt's own. Throws (after cleaning up) if
 * passt or `ip` is missing or fails.
 */
export async function startPasst(prefix = "nbx-insp", passtArgs: string[] = []): Promise<Provider> {
  const ns = uniqueName(prefix);
  const dir = await Deno.makeTempDir({ prefix: `${ns}-` });
  const socket = `${dir}/passt.sock`;
  let child: Deno.ChildProcess | undefined;
  const cleanup = async () => {
    if (child) {
      try {
        child.kill("SIGTERM");
      } catch { /* already gone */ }
      await child.status;
      await child.stderr.cancel().catch(() => {});
    }
    await run("ip", ["netns", "del", ns]).catch(() => {});
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  };
  try {
    await Deno.chmod(dir, 0o1777);
    await run("ip", ["netns", "add", ns]);
    const ip = (...a: string[]) => run("ip", ["-n", ns, ...a]);
    await ip("link", "set", "lo", "up");
    await ip("link", "add", "v0", "type", "veth", "peer", "name", "v1");
    await ip("addr", "add", "192.168.77.2/24", "dev", "v0");
    await ip("link", "set", "v0", "up");
    await ip("link", "set", "v1", "up");
    await ip("route", "add", "default", "via", "192.168.77.1", "dev", "v0");
    child = new Deno.Command("ip", {
      args: ["netns", "exec", ns, "passt", "-f", "-q", "-4", "-1", "-s", socket, ...passtArgs],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const exited = child.status.then((s) => s);
    const appeared = waitForPath(socket).then(() => undefined);
    const first = await Promise.race([appeared, exited]);
    if (first !== undefined) {
      const err = await new Response(child.stderr).text();
      child = undefined;
      throw new Error(`passt exited (code ${first.code}) before its socket appeared: ${err}`);
    }
  } catch (e) {
    await cleanup();
    throw e;
  }
  return { socket, gatewayIp: "192.168.77.1", guestIp: "192.168.77.2", close: cleanup };
}

/** The libgvproxy.so nerdbox's setup installs. */
export const LIBGVPROXY = "/usr/local/lib/libgvproxy.so";

let gvproxyLib:
  | Deno.DynamicLibrary<{
    gvproxy_create: { parameters: ["buffer"]; result: "i64" };
    gvproxy_destroy: { parameters: ["i64"]; result: "i32" };
  }>
  | undefined;

/**
 * Starts a libgvproxy instance (gvisor-tap-vsock as a library, in this process) on a fresh
 * socket: subnet 192.168.127.0/24, gateway .1, guest .2. The library stays loaded (Go runtimes
 * cannot be unloaded); `close()` destroys the instance and removes its directory.
 */
export async function startGvproxy(prefix = "nbx-insp"): Promise<Provider> {
  gvproxyLib ??= Deno.dlopen(LIBGVPROXY, {
    gvproxy_create: { parameters: ["buffer"], result: "i64" },
    gvproxy_destroy: { parameters: ["i64"], result: "i32" },
  });
  const dir = await Deno.makeTempDir({ prefix: `${uniqueName(prefix)}-` });
  const socket = `${dir}/gvproxy.sock`;
  const config = JSON.stringify({
    socket_path: socket,
    subnet: "192.168.127.0/24",
    gateway_ip: "192.168.127.1",
    gateway_mac: "5a:94:ef:e4:0c:dd",
    guest_ip: "192.168.127.2",
    guest_mac: "52:54:00:12:34:56",
    mtu: 1500,
    port_mappings: [],
    dns_zones: [],
    dns_search_domains: [],
  });
  const id = gvproxyLib.symbols.gvproxy_create(new TextEncoder().encode(`${config}\0`));
  if (id < 0) {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    throw new Error(`gvproxy_create failed (${id}) for ${config}`);
  }
  const close = async () => {
    gvproxyLib!.symbols.gvproxy_destroy(id);
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  };
  try {
    await waitForPath(socket);
  } catch (e) {
    await close();
    throw e;
  }
  return { socket, gatewayIp: "192.168.127.1", guestIp: "192.168.127.2", close };
}

function ipBytes(ip: string): number[] {
  return ip.split(".").map(Number);
}

/** An Ethernet ARP who-has frame from `mac`/`fromIp` asking for `targetIp`. */
export function arpRequest(mac: string, fromIp: string, targetIp: string): Uint8Array {
  const m = mac.split(":").map((h) => parseInt(h, 16));
  return new Uint8Array([
    ...[0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
    ...m,
    0x08,
    0x06, // ARP
    0x00,
    0x01,
    0x08,
    0x00,
    6,
    4,
    0x00,
    0x01, // request
    ...m,
    ...ipBytes(fromIp),
    ...[0, 0, 0, 0, 0, 0],
    ...ipBytes(targetIp),
  ]);
}

/**
 * Acts as a VM on a connected QEMU-framed stream: sends an ARP who-has for `targetIp` and returns
 * the MAC in the first ARP reply for it. Throws after `ms` without one.
 */
export async function arpOverStream(
  conn: Deno.Conn,
  p: { mac: string; fromIp: string; targetIp: string },
  ms = 5000,
): Promise<string> {
  const frame = arpRequest(p.mac, p.fromIp, p.targetIp);
  const msg = new Uint8Array(4 + frame.length);
  new DataView(msg.buffer).setUint32(0, frame.length);
  msg.set(frame, 4);
  await conn.write(msg);
  let buf = new Uint8Array(0);
  const target = ipBytes(p.targetIp).join(".");
  const timer = setTimeout(() => conn.close(), ms);
  try {
    const chunk = new Uint8Array(65536);
    while (true) {
      const n = await conn.read(chunk);
      if (n === null) throw new Error("provider closed the connection without an ARP reply");
      const next = new Uint8Array(buf.length + n);
      next.set(buf);
      next.set(chunk.subarray(0, n), buf.length);
      buf = next;
      while (buf.length >= 4) {
        const len = new DataView(buf.buffer, buf.byteOffset).getUint32(0);
        if (buf.length < 4 + len) break;
        const f = buf.subarray(4, 4 + len);
        buf = buf.slice(4 + len);
        const isArpReply = f.length >= 42 && f[12] === 0x08 && f[13] === 0x06 && f[21] === 2;
        if (isArpReply && Array.from(f.subarray(28, 32)).join(".") === target) {
          return Array.from(f.subarray(22, 28)).map((b) => b.toString(16).padStart(2, "0"))
            .join(":");
        }
      }
    }
  } catch (e) {
    if (e instanceof Deno.errors.BadResource || e instanceof Deno.errors.Interrupted) {
      throw new Error(`no ARP reply for ${p.targetIp} within ${ms} ms`);
    }
    throw e;
  } finally {
    clearTimeout(timer);
  }
}
