/**
 * Installs the OCI runtime clients the runtime-CLI tests drive: Debian 12's podman 4.3 with conmon
 * and netavark (podman's network backend), and docker.io (dockerd 20.10) for the Docker test.
 * Idempotent: does nothing when every package is present.
 */

/** Debian packages the podman/docker tests need. */
export const CLIENT_PACKAGES = [
  "podman",
  "conmon",
  "netavark",
  "aardvark-dns",
  "docker.io",
  "busybox-static",
];

async function missing(): Promise<string[]> {
  const out = await new Deno.Command("dpkg-query", {
    args: ["-W", "-f", "${Package} ${db:Status-Status}\\n", ...CLIENT_PACKAGES],
    stdout: "piped",
    stderr: "null",
  }).output();
  const installed = new Set(
    new TextDecoder().decode(out.stdout).split("\n")
      .filter((l) => l.endsWith(" installed")).map((l) => l.split(" ")[0]),
  );
  return CLIENT_PACKAGES.filter((p) => !installed.has(p));
}

async function run(cmd: string, args: string[]): Promise<void> {
  const env = { DEBIAN_FRONTEND: "noninteractive" };
  const out = await new Deno.Command(cmd, { args, env, stdin: "null" }).output();
  if (!out.success) throw new Error(`${cmd} ${args.join(" ")} failed (status ${out.code})`);
}

/** Installs podman, conmon, netavark and docker.io unless present; never starts a daemon. */
export async function installOciClients(): Promise<void> {
  const need = await missing();
  if (need.length === 0) return;
  await run("apt-get", ["update", "-q"]);
  // policy-rc.d keeps the package scripts from starting dockerd/containerd system services.
  const policy = "/usr/sbin/policy-rc.d";
  let wrote = false;
  try {
    await Deno.lstat(policy);
  } catch {
    await Deno.writeTextFile(policy, "#!/bin/sh\nexit 101\n", { mode: 0o755 });
    wrote = true;
  }
  try {
    await run("apt-get", ["install", "-y", "-q", "--no-install-recommends", ...need]);
  } finally {
    if (wrote) await Deno.remove(policy).catch(() => {});
  }
}

if (import.meta.main) await installOciClients();
