/**
 * Installs what the nested libkrun test rig (tests/nested/) needs: Debian's generic amd64 kernel
 * (it has kvm_amd, 9p and overlay, which the cloud kernel lacks), downloaded with `apt-get
 * download` and unpacked privately with `dpkg -x` under the rig's cache dir; nothing goes to /boot
 * or /lib/modules. Idempotent: quick when the unpacked kernel is present.
 */

/** The rig's persistent cache (kernel, guest image cache, results of the last run). */
export const NESTED_CACHE_DIR = Deno.env.get("NERDBOX_NESTED_CACHE") ??
  "/var/lib/nerdbox/nested-cache";

/** The unpacked L1 kernel: its release, vmlinuz and module tree. */
export interface NestedKernel {
  release: string;
  vmlinuz: string;
  /** `<root>/lib/modules/<release>` (depmod has run on it). */
  modulesDir: string;
}

async function run(cmd: string, args: string[], cwd?: string): Promise<string> {
  const out = await new Deno.Command(cmd, {
    args,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    ...(cwd ? { cwd } : {}),
    env: { DEBIAN_FRONTEND: "noninteractive" },
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  if (!out.success) {
    const err = new TextDecoder().decode(out.stderr).trim().split("\n").slice(-5).join("\n");
    throw new Error(`setup_nested: ${cmd} ${args.join(" ")} failed (exit ${out.code}):\n${err}`);
  }
  return text;
}

/** The generic kernel package `linux-image-amd64` depends on, e.g. linux-image-6.1.0-57-amd64. */
async function kernelPackage(): Promise<string> {
  const deps = await run("apt-cache", ["depends", "linux-image-amd64"]);
  const pkg = deps.match(/Depends: (linux-image-[0-9.]+-[0-9]+-amd64)\b/)?.[1];
  if (!pkg) {
    throw new Error(
      `setup_nested: apt-cache depends linux-image-amd64 names no linux-image-*-amd64:\n${deps}`,
    );
  }
  return pkg;
}

/** The unpacked kernel under `dir` when complete, else undefined. */
export function findNestedKernel(dir = `${NESTED_CACHE_DIR}/kernel`): NestedKernel | undefined {
  try {
    for (const e of Deno.readDirSync(`${dir}/boot`)) {
      const release = e.name.match(/^vmlinuz-(.+)$/)?.[1];
      if (!release) continue;
      const modulesDir = `${dir}/lib/modules/${release}`;
      Deno.statSync(`${modulesDir}/modules.dep`);
      return { release, vmlinuz: `${dir}/boot/${e.name}`, modulesDir };
    }
  } catch {
    // not unpacked (yet)
  }
  return undefined;
}

/** Downloads and unpacks the generic kernel unless present; returns it. */
export async function installNestedKernel(): Promise<NestedKernel> {
  const dir = `${NESTED_CACHE_DIR}/kernel`;
  const found = findNestedKernel(dir);
  if (found) return found;
  let pkg: string;
  try {
    pkg = await kernelPackage();
  } catch {
    await run("apt-get", ["update", "-q"]);
    pkg = await kernelPackage();
  }
  console.error(`setup: unpacking ${pkg} for the nested libkrun rig into ${dir}`);
  const tmp = `${dir}.tmp`;
  await Deno.remove(tmp, { recursive: true }).catch(() => {});
  await Deno.mkdir(`${tmp}/deb`, { recursive: true });
  try {
    await run("apt-get", ["download", "-q", pkg], `${tmp}/deb`);
  } catch {
    await run("apt-get", ["update", "-q"]);
    await run("apt-get", ["download", "-q", pkg], `${tmp}/deb`);
  }
  const deb = [...Deno.readDirSync(`${tmp}/deb`)].find((e) => e.name.endsWith(".deb"));
  if (!deb) throw new Error(`setup_nested: apt-get download ${pkg} left no .deb`);
  await run("dpkg", ["-x", `${tmp}/deb/${deb.name}`, `${tmp}/root`]);
  const release = pkg.slice("linux-image-".length);
  await run("depmod", ["-b", `${tmp}/root`, release]);
  await Deno.remove(dir, { recursive: true }).catch(() => {});
  await Deno.rename(`${tmp}/root`, dir);
  await Deno.remove(tmp, { recursive: true });
  const k = findNestedKernel(dir);
  if (!k) throw new Error(`setup_nested: ${pkg} unpacked into ${dir} has no boot/vmlinuz-*`);
  return k;
}
