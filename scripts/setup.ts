/**
 * `deno task setup`: idempotently installs every system package and npm artifact nerdbox needs on
 * Debian 12 (run as root). Quick when everything is already present.
 */
import { installLibkrun } from "./setup_libkrun.ts";
import { installNestedKernel } from "./setup_nested.ts";
import { installOciClients } from "./setup_podman.ts";
import { installPrivateContainerd, installPrivateGvproxy } from "./setup_containerd.ts";
import { installPodPackages } from "./setup_pods.ts";
import { installPrivateErofsUtils } from "./setup_erofs_utils.ts";

/** Debian packages nerdbox and its tests use. */
export const DEBIAN_PACKAGES = [
  "qemu-system-x86",
  "linux-image-cloud-amd64",
  "passt",
  "containerd",
  "runc",
  "containernetworking-plugins",
  "busybox-static",
  "iproute2",
  "iptables",
  "e2fsprogs",
  "erofs-utils",
  "lz4",
  "cpio",
  "socat",
  "hyperfine",
  "kmod",
  "util-linux",
  "procps",
  "nftables",
];

async function run(cmd: string, args: string[], env: Record<string, string> = {}): Promise<void> {
  const out = await new Deno.Command(cmd, { args, env, stdin: "null" }).output();
  if (!out.success) {
    const err = new TextDecoder().decode(out.stderr).trim().split("\n").slice(-10).join("\n");
    throw new Error(`setup: ${cmd} ${args.join(" ")} failed (exit ${out.code}):\n${err}`);
  }
}

async function missingPackages(): Promise<string[]> {
  const out = await new Deno.Command("dpkg-query", {
    args: ["-W", "-f", "${Package} ${db:Status-Status}\n", ...DEBIAN_PACKAGES],
    stdout: "piped",
    stderr: "null",
  }).output();
  const installed = new Set(
    new TextDecoder().decode(out.stdout).split("\n")
      .filter((l) => l.endsWith(" installed"))
      .map((l) => l.split(" ")[0]),
  );
  return DEBIAN_PACKAGES.filter((p) => !installed.has(p));
}

async function main(): Promise<void> {
  if (Deno.uid() !== 0) {
    console.error("setup: must run as root (it installs Debian packages and libkrun)");
    Deno.exit(1);
  }
  const missing = await missingPackages();
  if (missing.length > 0) {
    console.error(`setup: installing ${missing.join(" ")}`);
    const env = { DEBIAN_FRONTEND: "noninteractive" };
    await run("apt-get", ["update", "-q"], env);
    await run("apt-get", ["install", "-y", "-q", "--no-install-recommends", ...missing], env);
  }
  await installLibkrun();
  await installNestedKernel();
  await installOciClients();
  await installPrivateContainerd();
  await installPrivateGvproxy();
  await installPrivateErofsUtils();
  await installPodPackages();
  // Cache the program's own dependencies so later runs need no network.
  await run(Deno.execPath(), ["install", "--quiet"]);
  console.error("setup: all present");
}

if (import.meta.main) await main();
