/**
 * Test helper: Debian 12's dockerd (docker.io 20.10) on private state — its own data root, exec
 * root, pidfile and socket, no bridge and no iptables changes (the host's network is never
 * touched) — with nerdbox registered as the runtime `nerdbox`, and a busybox image imported from
 * a rootfs tarball (`docker import`, offline).
 */
import { makeBusyboxRootfs } from "./rootfs.ts";
import { NERDBOX } from "./nerdbox_cli.ts";
import { runCommandText } from "./procs.ts";

/** The image the docker test imports. */
export const DOCKER_IMAGE = "nbxbusybox:latest";

/** Debian's docker client (the one matching dockerd 20.10). */
const DOCKER = "/usr/bin/docker";

/** A private dockerd. */
export interface Dockerd {
  run(args: string[]): Promise<{ code: number; stdout: string; stderr: string }>;
  /** dockerd's own log so far. */
  log(): Promise<string>;
  close(): Promise<void>;
}

/** Starts dockerd; fails loudly when docker.io is not installed or dockerd does not come up. */
export async function startDockerd(): Promise<Dockerd> {
  await Deno.stat("/usr/sbin/dockerd").catch(() => {
    throw new Error("/usr/sbin/dockerd missing: run scripts/setup_podman.ts (deno task setup)");
  });
  const dir = await Deno.makeTempDir({ dir: "/var/tmp", prefix: "nbxdocker-" });
  const run = await Deno.makeTempDir({ dir: "/run", prefix: "nbxdocker-" });
  const sock = `${run}/docker.sock`;
  const logFile = await Deno.open(`${dir}/dockerd.log`, { create: true, write: true });
  const daemon = new Deno.Command("/usr/sbin/dockerd", {
    args: [
      "--data-root",
      `${dir}/data`,
      "--exec-root",
      `${run}/exec`,
      "--pidfile",
      `${run}/dockerd.pid`,
      "--host",
      `unix://${sock}`,
      "--bridge",
      "none",
      "--iptables=false",
      "--ip6tables=false",
      "--ip-masq=false",
      "--userland-proxy=false",
      "--default-ulimit",
      "nofile=1024:1024",
      "--add-runtime",
      `nerdbox=${NERDBOX}`,
    ],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const pump = async (s: ReadableStream<Uint8Array>) => {
    for await (const c of s) await logFile.write(c).catch(() => 0);
  };
  void pump(daemon.stdout).catch(() => {});
  void pump(daemon.stderr).catch(() => {});
  const docker = (args: string[]) => runCommandText(DOCKER, ["--host", `unix://${sock}`, ...args]);
  const log = () => Deno.readTextFile(`${dir}/dockerd.log`).catch(() => "");
  const close = async () => {
    await docker(["rm", "-f", ...(await docker(["ps", "-aq"])).stdout.split("\n").filter(Boolean)]);
    try {
      daemon.kill("SIGTERM");
    } catch { /* gone */ }
    await daemon.status;
    logFile.close();
    await new Deno.Command("umount", { args: ["-R", `${dir}/data`], stderr: "null" }).output();
    await new Deno.Command("umount", { args: ["-R", run], stderr: "null" }).output();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    await Deno.remove(run, { recursive: true }).catch(() => {});
  };
  try {
    const deadline = Date.now() + 60_000;
    while ((await docker(["version"])).code !== 0) {
      if (Date.now() > deadline) throw new Error(`dockerd did not answer:\n${await log()}`);
      await new Promise((r) => setTimeout(r, 500));
    }
    const rootfs = await makeBusyboxRootfs(`${dir}/rootfs`);
    const tar = await new Deno.Command("tar", {
      args: ["-C", rootfs, "-cf", `${dir}/rootfs.tar`, "."],
    }).output();
    if (!tar.success) throw new Error("tar of the busybox rootfs failed");
    const imp = await docker(["import", `${dir}/rootfs.tar`, DOCKER_IMAGE]);
    if (imp.code !== 0) throw new Error(`docker import: ${imp.stderr}`);
  } catch (e) {
    await close();
    throw e;
  }
  return { run: docker, log, close };
}
