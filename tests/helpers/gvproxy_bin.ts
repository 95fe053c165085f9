/**
 * Debian's gvproxy binary (gvisor-tap-vsock 0.8.1 from sid, installed privately by
 * scripts/setup_containerd.ts) in a private network namespace: `-listen-qemu unix://…` (stream;
 * this version has no unixgram listener on Linux), subnet 192.168.127.0/24, gateway .1.
 */
import type { Provider } from "./providers.ts";
import { uniqueName, waitForPath } from "./providers.ts";
import { GVPROXY_DIR } from "../../scripts/setup_containerd.ts";

/** The gvproxy binary. */
export const GVPROXY_BIN = `${GVPROXY_DIR}/usr/bin/gvproxy`;

async function ip(args: string[]): Promise<void> {
  const o = await new Deno.Command("ip", { args, stdout: "null", stderr: "piped" }).output();
  if (!o.success) throw new Error(`ip ${args.join(" ")}: ${new TextDecoder().decode(o.stderr)}`);
}

/** Starts gvproxy in a fresh netns; `close()` stops it and removes the netns and socket dir. */
export async function startGvproxyBinary(prefix = "nbx-gvp"): Promise<Provider> {
  if (!(await Deno.stat(GVPROXY_BIN).then(() => true, () => false))) {
    throw new Error(`${GVPROXY_BIN} missing (deno task setup installs it): the test needs it`);
  }
  const ns = uniqueName(prefix);
  const dir = await Deno.makeTempDir({ prefix: `${ns}-` });
  await Deno.chmod(dir, 0o1777);
  const socket = `${dir}/gvproxy.sock`;
  let child: Deno.ChildProcess | undefined;
  const close = async () => {
    try {
      child?.kill("SIGTERM");
      await child?.status;
    } catch { /* gone */ }
    await ip(["netns", "del", ns]).catch(() => {});
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  };
  try {
    await ip(["netns", "add", ns]);
    await ip(["-n", ns, "link", "set", "lo", "up"]);
    child = new Deno.Command("ip", {
      args: [
        "netns",
        "exec",
        ns,
        GVPROXY_BIN,
        "-listen-qemu",
        `unix://${socket}`,
        "-ssh-port",
        "-1",
      ],
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn();
    await waitForPath(socket, 10_000);
  } catch (e) {
    await close();
    throw e;
  }
  return { socket, gatewayIp: "192.168.127.1", guestIp: "192.168.127.2", close };
}
