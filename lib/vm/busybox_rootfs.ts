/**
 * Builds a minimal container root filesystem from the host's static busybox (Debian
 * busybox-static): `/bin/busybox`, one symlink per applet, and the few files a container expects.
 * Used by `nerdbox demo` and by the tests.
 */

/** Where Debian's busybox-static installs its binary. */
export const BUSYBOX = "/bin/busybox";

async function isStatic(path: string): Promise<boolean> {
  const bytes = await Deno.readFile(path);
  if (bytes[0] !== 0x7f || bytes[1] !== 0x45 || bytes[4] !== 2) return false;
  const v = new DataView(bytes.buffer);
  const phoff = Number(v.getBigUint64(0x20, true));
  const phentsize = v.getUint16(0x36, true);
  const phnum = v.getUint16(0x38, true);
  for (let i = 0; i < phnum; i++) {
    if (v.getUint32(phoff + i * phentsize, true) === 3) return false; // PT_INTERP
  }
  return true;
}

/** Lists busybox's applets as root-relative paths (`bin/sh`, `usr/bin/wget`, …). */
export async function busyboxApplets(busybox = BUSYBOX): Promise<string[]> {
  const out = await new Deno.Command(busybox, {
    args: ["--list-full"],
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) {
    throw new Error(`${busybox} --list-full failed: ${new TextDecoder().decode(out.stderr)}`);
  }
  return new TextDecoder().decode(out.stdout).split("\n").map((l) => l.trim())
    .filter((l) => l !== "" && !l.includes("..") && !l.startsWith("/"));
}

/**
 * Creates a busybox root filesystem in `dir` (a new temporary directory when omitted) and returns
 * its path. Fails with a clear message when busybox-static is missing.
 */
export async function makeBusyboxRootfs(dir?: string, busybox = BUSYBOX): Promise<string> {
  try {
    if (!(await isStatic(busybox))) {
      throw new Error(`${busybox} is not statically linked`);
    }
  } catch (err) {
    throw new Error(
      `busybox rootfs: need a static ${busybox} (apt-get install busybox-static): ` +
        (err as Error).message,
    );
  }
  const root = dir ?? await Deno.makeTempDir({ prefix: "nerdbox-busybox-" });
  try {
    for (
      const d of [
        "bin",
        "sbin",
        "usr/bin",
        "usr/sbin",
        "etc",
        "proc",
        "sys",
        "dev",
        "tmp",
        "root",
        "run",
        "var/tmp",
      ]
    ) {
      await Deno.mkdir(`${root}/${d}`, { recursive: true });
    }
    await Deno.chmod(`${root}/tmp`, 0o1777);
    await Deno.copyFile(busybox, `${root}/bin/busybox`);
    await Deno.chmod(`${root}/bin/busybox`, 0o755);
    for (const applet of await busyboxApplets(busybox)) {
      if (applet === "bin/busybox") continue;
      const link = `${root}/${applet}`;
      await Deno.remove(link).catch(() => {});
      await Deno.symlink("/bin/busybox", link);
    }
    await Deno.writeTextFile(
      `${root}/etc/passwd`,
      "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    );
    await Deno.writeTextFile(`${root}/etc/group`, "root:x:0:\nnogroup:x:65534:\n");
    await Deno.writeTextFile(`${root}/etc/hosts`, "127.0.0.1 localhost\n");
    await Deno.writeTextFile(`${root}/etc/resolv.conf`, "");
    return root;
  } catch (err) {
    if (dir === undefined) await Deno.remove(root, { recursive: true }).catch(() => {});
    throw err;
  }
}
