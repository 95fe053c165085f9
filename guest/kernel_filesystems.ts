/**
 * The filesystem types the guest's kernel can mount (`/proc/filesystems`): libkrunfw's kernel,
 * for one, has no POSIX message queues, so a spec's `mqueue` mount cannot be satisfied there.
 */

/** The filesystem type names in `/proc/filesystems` text (`[nodev]\t<name>` per line). */
export function parseFilesystems(text: string): Set<string> {
  const names = new Set<string>();
  for (const line of text.split("\n")) {
    const name = line.split("\t").pop()?.trim();
    if (name) names.add(name);
  }
  return names;
}

let cached: ReadonlySet<string> | undefined;

/** This kernel's filesystem types, read once; undefined when `/proc/filesystems` cannot be read. */
export function kernelFilesystems(): ReadonlySet<string> | undefined {
  if (cached) return cached;
  try {
    cached = parseFilesystems(Deno.readTextFileSync("/proc/filesystems"));
  } catch {
    return undefined;
  }
  return cached;
}
