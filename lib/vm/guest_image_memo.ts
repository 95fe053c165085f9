/**
 * A memo of the guest image's content key (lib/vm/guest_image.ts): the identities (device, inode,
 * size, mtime) of every input name a small file holding the image record, so a run whose inputs
 * did not change skips hashing the guest sources and parsing the kernel's modules.dep. Any input
 * that cannot be stat'ed (a compiled binary's virtual sources) means no memo: the content key is
 * computed as before.
 */
import type { GuestImage } from "./guest_image.ts";

/** `path:dev:ino:size:mtime` of `path`. */
export async function fileIdentity(path: string): Promise<string> {
  const st = await Deno.stat(path);
  return `${path}:${st.dev}:${st.ino}:${st.size}:${st.mtime?.getTime()}`;
}

/** The memo file for these inputs (`extra`: settings that are not files), or undefined. */
export async function memoPath(
  cache: string,
  files: string[],
  extra: string[],
): Promise<string | undefined> {
  let ids: string[];
  try {
    ids = await Promise.all(files.map(fileIdentity));
  } catch {
    return undefined;
  }
  const bytes = new TextEncoder().encode([...extra, ...ids].join("\n"));
  const d = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  const hex = Array.from(d.subarray(0, 12), (b) => b.toString(16).padStart(2, "0")).join("");
  return `${cache}/key-${hex}.json`;
}

const FIELDS = ["rootDir", "kernel", "initramfs", "runtimeDisk", "kernelRelease", "hash"] as const;

/** The image record in memo `path`, when it is there, well-formed and its image complete. */
export async function readMemo(path: string): Promise<GuestImage | undefined> {
  let rec: Record<string, unknown>;
  try {
    rec = JSON.parse(await Deno.readTextFile(path));
  } catch {
    return undefined;
  }
  if (FIELDS.some((f) => typeof rec[f] !== "string")) return undefined;
  if (!Array.isArray(rec.modules) || rec.modules.some((m) => typeof m !== "string")) {
    return undefined;
  }
  const image = rec as unknown as GuestImage;
  const dir = image.rootDir.replace(/\/root$/, "");
  try {
    await Deno.stat(`${dir}/complete`);
    await Deno.stat(image.kernel);
  } catch {
    return undefined;
  }
  return image;
}

/** Writes memo `path` for `image` (atomically; a failure only costs the next run the hashing). */
export async function writeMemo(path: string, image: GuestImage): Promise<void> {
  const tmp = `${path}.tmp-${crypto.randomUUID()}`;
  try {
    await Deno.writeTextFile(tmp, JSON.stringify(image));
    await Deno.rename(tmp, path);
  } catch {
    await Deno.remove(tmp).catch(() => {});
  }
}

/** Removes the memos in `cache` whose image is gone (pruned or never completed). */
export async function pruneMemos(cache: string): Promise<void> {
  for await (const e of Deno.readDir(cache)) {
    if (!e.isFile || !/^key-[0-9a-f]+\.json$/.test(e.name)) continue;
    const path = `${cache}/${e.name}`;
    if (!(await readMemo(path))) await Deno.remove(path).catch(() => {});
  }
}
