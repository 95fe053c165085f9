/**
 * The container's root filesystem on the host: the mounts containerd sends in
 * CreateTaskRequest.rootfs, mounted in order on `<bundle>/rootfs` with mount(8) (argv only, never a
 * shell), and unmounted again — in Delete, in the `delete` command and on every failure.
 */

/**
 * Mount types the shim takes into the VM itself instead of letting containerd mount them on the
 * host (reported to containerd ≥ 2.2 by `-info` as `containerd.io/runtime-allow-mounts`).
 */
export const VM_MOUNT_TYPES: readonly string[] = [
  // containerd ≥ 2.2's erofs snapshotter: layer blobs become read-only virtio-blk devices
  // (lib/shim/erofs_rootfs.ts) and the format/mkdir overlay over them is assembled in the guest.
  // mkfs/* is left to containerd (block mode's writable image, which then arrives as `ext4`), as
  // containerd's own nerdbox does; a plain ext4 list is mounted on the host as before.
  "mkdir/*",
  "format/*",
  "erofs",
  "ext4",
];

/** One mount as containerd describes it (containerd.types.Mount). */
export interface RootfsMount {
  type: string;
  source: string;
  options: string[];
}

async function run(bin: string, args: string[]): Promise<{ ok: boolean; err: string }> {
  const out = await new Deno.Command(bin, { args, stdin: "null", stdout: "null", stderr: "piped" })
    .output();
  return { ok: out.success, err: new TextDecoder().decode(out.stderr).trim() };
}

/** Builds mount(8)'s argv for one mount on `target`. */
export function mountArgs(m: RootfsMount, target: string): string[] {
  const bind = m.options.includes("bind") || m.options.includes("rbind") || m.type === "bind";
  if (bind) {
    const recursive = m.options.includes("rbind");
    const rest = m.options.filter((o) => o !== "bind" && o !== "rbind");
    const args = [recursive ? "--rbind" : "--bind"];
    if (rest.length > 0) args.push("-o", rest.join(","));
    return [...args, "--", m.source, target];
  }
  const args = ["-t", m.type];
  if (m.options.length > 0) args.push("-o", m.options.join(","));
  return [...args, "--", m.source, target];
}

/** Mounts every entry on `target` in order; on failure undoes what it mounted and throws. */
export async function mountRootfs(mounts: RootfsMount[], target: string): Promise<void> {
  for (const m of mounts) {
    if (!m.type && !m.options.includes("bind") && !m.options.includes("rbind")) {
      throw new Error(`rootfs mount with empty type (source ${JSON.stringify(m.source)})`);
    }
    const res = await run("mount", mountArgs(m, target));
    if (!res.ok) {
      await unmountAll(target).catch(() => {});
      throw new Error(
        `mount ${m.type || "bind"} ${JSON.stringify(m.source)} on ${target} failed: ${res.err}`,
      );
    }
  }
}

function unescapeMountinfo(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o) => String.fromCharCode(parseInt(o, 8)));
}

/** Mount points currently in this mount namespace (from /proc/self/mountinfo). */
export async function mountPoints(): Promise<string[]> {
  const text = await Deno.readTextFile("/proc/self/mountinfo");
  return text.split("\n").filter((l) => l).map((l) => unescapeMountinfo(l.split(" ")[4]));
}

/** Whether anything is mounted at or below `target`. */
export async function isMounted(target: string): Promise<boolean> {
  const points = await mountPoints();
  return points.some((p) => p === target || p.startsWith(`${target}/`));
}

/** Unmounts everything at and below `target` (stacked mounts too). Idempotent. */
export async function unmountAll(target: string): Promise<void> {
  let real = target;
  try {
    real = await Deno.realPath(target);
  } catch {
    return; // nothing there, nothing mounted
  }
  for (let round = 0; round < 32; round++) {
    const points = (await mountPoints()).filter((p) => p === real || p.startsWith(`${real}/`));
    if (points.length === 0) return;
    // deepest first
    points.sort((a, b) => b.length - a.length);
    const res = await run("umount", [points[0]]);
    if (!res.ok) {
      const lazy = await run("umount", ["-l", points[0]]);
      if (!lazy.ok) throw new Error(`umount ${points[0]} failed: ${res.err}`);
    }
  }
  throw new Error(`umount ${real}: still mounted after 32 rounds`);
}
