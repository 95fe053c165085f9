/**
 * Test helper: Debian's podman (4.3, conmon, netavark) on private state — its own storage root,
 * run root, containers.conf (lowered default ulimits: the hard RLIMIT_NOFILE here is below podman's
 * default, see docs/runtime-cli.md), network config dir and subnet — with nerdbox as the OCI
 * runtime (`--runtime /abs/bin/nerdbox`), and a busybox image loaded offline.
 */
import { buildBusyboxImage } from "./containerd.ts";
import { NERDBOX } from "./nerdbox_cli.ts";
import { runCommandText } from "./procs.ts";

/** The image the podman tests load. */
export const PODMAN_IMAGE = "localhost/nbxbusybox:latest";

/** A private podman. */
export interface Podman {
  /** Runs `podman ARGS` with the private config and nerdbox as runtime. */
  run(args: string[]): Promise<{ code: number; stdout: string; stderr: string }>;
  /** The network subnet its default network uses. */
  subnet: string;
  /** Removes every container, the storage and the configs. */
  close(): Promise<void>;
}

/** Sets up a private podman with the busybox image loaded; fails loudly if podman is missing. */
export async function startPodman(subnet = "10.217.9.0/24"): Promise<Podman> {
  for (const bin of ["podman", "conmon", "/usr/lib/podman/netavark"]) {
    const found = await new Deno.Command("sh", { args: ["-c", `command -v ${bin}`] }).output();
    if (!found.success) {
      throw new Error(`${bin} missing: run scripts/setup_podman.ts (deno task setup)`);
    }
  }
  const dir = await Deno.makeTempDir({ dir: "/var/tmp", prefix: "nbxpodman-" });
  const runroot = await Deno.makeTempDir({ dir: "/run", prefix: "nbxpodman-" });
  await Deno.mkdir(`${dir}/net`);
  await Deno.writeTextFile(
    `${dir}/containers.conf`,
    [
      "[containers]",
      'default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]',
      'log_driver = "k8s-file"',
      "[engine]",
      'cgroup_manager = "cgroupfs"',
      'events_logger = "file"',
      `tmp_dir = "${runroot}/tmp"`,
      "[network]",
      'network_backend = "netavark"',
      `network_config_dir = "${dir}/net"`,
      `default_subnet = "${subnet}"`,
      "",
    ].join("\n"),
  );
  const env = { CONTAINERS_CONF: `${dir}/containers.conf`, PATH: Deno.env.get("PATH") ?? "" };
  const base = ["--root", `${dir}/storage`, "--runroot", runroot, "--runtime", NERDBOX];
  const run = (args: string[]) => runCommandText("podman", [...base, ...args], { env });
  const close = async () => {
    await run(["rm", "-af", "-t", "0"]);
    await run(["rmi", "-af"]);
    await new Deno.Command("umount", { args: ["-R", `${dir}/storage`], stderr: "null" }).output();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    await Deno.remove(runroot, { recursive: true }).catch(() => {});
  };
  try {
    await buildBusyboxImage(`${dir}/image.tar`, PODMAN_IMAGE);
    const load = await run(["load", "-i", `${dir}/image.tar`]);
    if (load.code !== 0) throw new Error(`podman load: ${load.stderr}`);
  } catch (e) {
    await close();
    throw e;
  }
  return { run, subnet, close };
}
