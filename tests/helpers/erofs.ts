/** erofs images for tests and benches: the real mkfs.erofs, and a file digest to show an image unchanged. */

/** Builds an erofs image `out` from directory `src`; a missing mkfs.erofs fails naming the package. */
export async function mkfsErofs(src: string, out: string): Promise<void> {
  const o = await new Deno.Command("mkfs.erofs", {
    args: [out, src],
    stdout: "null",
    stderr: "piped",
  }).output();
  if (!o.success) {
    throw new Error(
      `mkfs.erofs (apt-get install erofs-utils): ${new TextDecoder().decode(o.stderr)}`,
    );
  }
}

/** The SHA-256 of a file's content, as hex. */
export async function sha256File(path: string): Promise<string> {
  const d = new Uint8Array(await crypto.subtle.digest("SHA-256", await Deno.readFile(path)));
  return [...d].map((b) => b.toString(16).padStart(2, "0")).join("");
}
