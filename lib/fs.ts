/**
 * Small filesystem helpers shared by the host, the scripts and the guest init (the guest image
 * ships this file; it imports nothing).
 */

/**
 * Whether something is at `path` (lstat: a dangling symlink counts). Any lstat error reads as
 * "absent", unless `strict`: then only NotFound does and other errors are thrown.
 */
export async function exists(path: string, strict = false): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (e) {
    if (strict && !(e instanceof Deno.errors.NotFound)) throw e;
    return false;
  }
}

/** `exists` for synchronous callers (the guest's early boot). */
export function existsSync(path: string): boolean {
  try {
    Deno.lstatSync(path);
    return true;
  } catch {
    return false;
  }
}
