/**
 * Setup step for pods: crun (the OCI executor the guest image carries, lib/vm/guest_crun.ts) and
 * what the shared CRI kit needs beyond nerdbox's own packages (python3 for its image builder and
 * summaries; tests/integration/cri_critest_test.ts). Idempotent; quick when present.
 */

/** Debian packages for pods that setup.ts does not already install. */
export const POD_PACKAGES = ["crun", "python3"];

/** Installs POD_PACKAGES with apt-get when any is missing. */
export async function installPodPackages(): Promise<void> {
  const q = await new Deno.Command("dpkg-query", {
    args: ["-W", "-f", "${Package} ${db:Status-Status}\n", ...POD_PACKAGES],
    stdout: "piped",
    stderr: "null",
  }).output();
  const installed = new Set(
    new TextDecoder().decode(q.stdout).split("\n").filter((l) => l.endsWith(" installed"))
      .map((l) => l.split(" ")[0]),
  );
  const missing = POD_PACKAGES.filter((p) => !installed.has(p));
  if (missing.length === 0) return;
  console.error(`setup: installing ${missing.join(" ")} (pods)`);
  const env = { DEBIAN_FRONTEND: "noninteractive" };
  for (
    const args of [["update", "-q"], ["install", "-y", "-q", "--no-install-recommends", ...missing]]
  ) {
    const out = await new Deno.Command("apt-get", { args, env, stdin: "null" }).output();
    if (!out.success) {
      const err = new TextDecoder().decode(out.stderr).trim().split("\n").slice(-10).join("\n");
      throw new Error(`setup: apt-get ${args.join(" ")} failed (exit ${out.code}):\n${err}`);
    }
  }
}
