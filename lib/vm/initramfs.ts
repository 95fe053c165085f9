/**
 * A writer for the Linux initramfs format: an uncompressed cpio archive in the "newc" (070701)
 * format, written entry by entry in TypeScript (no `cpio` binary, no shell).
 */

/** One archive member. Paths are relative to the archive root, without a leading `/`. */
export type CpioEntry =
  | { kind: "dir"; path: string; mode?: number }
  | { kind: "file"; path: string; mode?: number; data: Uint8Array }
  | { kind: "symlink"; path: string; target: string }
  | { kind: "chardev"; path: string; mode?: number; major: number; minor: number };

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const S_IFCHR = 0o020000;
const TRAILER = "TRAILER!!!";

function hex8(n: number): string {
  if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) {
    throw new RangeError(`cpio: header field ${n} does not fit in 32 bits`);
  }
  return n.toString(16).padStart(8, "0");
}

function pad4(n: number): number {
  return (4 - (n % 4)) % 4;
}

function checkPath(path: string): void {
  if (path === "" || path.startsWith("/") || path.split("/").some((p) => p === ".." || p === "")) {
    throw new Error(
      `cpio: entry path ${JSON.stringify(path)} must be relative, without ".." or "//"`,
    );
  }
}

/** Encodes one newc header + name (+ padding) for the given fields. */
function header(
  ino: number,
  mode: number,
  size: number,
  name: string,
  rdev: [number, number] = [0, 0],
): Uint8Array {
  const nameBytes = new TextEncoder().encode(name);
  const namesize = nameBytes.length + 1;
  const fields = [
    ino, // c_ino
    mode, // c_mode
    0, // c_uid
    0, // c_gid
    (mode & 0o170000) === S_IFDIR ? 2 : 1, // c_nlink
    0, // c_mtime (fixed: archives are reproducible)
    size, // c_filesize
    0, // c_devmajor
    0, // c_devminor
    rdev[0], // c_rdevmajor
    rdev[1], // c_rdevminor
    namesize, // c_namesize
    0, // c_check
  ];
  const head = new TextEncoder().encode("070701" + fields.map(hex8).join(""));
  const total = head.length + namesize + pad4(head.length + namesize);
  const out = new Uint8Array(total);
  out.set(head);
  out.set(nameBytes, head.length);
  return out;
}

/** Serialises entries into one newc archive (with trailer). Entries keep their order. */
export function encodeCpio(entries: CpioEntry[]): Uint8Array {
  const chunks: Uint8Array[] = [];
  let ino = 1;
  const seen = new Set<string>();
  for (const e of entries) {
    checkPath(e.path);
    if (seen.has(e.path)) throw new Error(`cpio: duplicate entry ${JSON.stringify(e.path)}`);
    seen.add(e.path);
    let mode: number;
    let data: Uint8Array = new Uint8Array(0);
    let rdev: [number, number] = [0, 0];
    switch (e.kind) {
      case "dir":
        mode = S_IFDIR | (e.mode ?? 0o755);
        break;
      case "file":
        mode = S_IFREG | (e.mode ?? 0o644);
        data = e.data;
        break;
      case "symlink":
        mode = S_IFLNK | 0o777;
        data = new TextEncoder().encode(e.target);
        break;
      case "chardev":
        mode = S_IFCHR | (e.mode ?? 0o600);
        rdev = [e.major, e.minor];
        break;
    }
    chunks.push(header(ino++, mode, data.length, e.path, rdev));
    if (data.length > 0) {
      chunks.push(data);
      chunks.push(new Uint8Array(pad4(data.length)));
    }
  }
  chunks.push(header(0, 0, 0, TRAILER));
  const size = chunks.reduce((n, c) => n + c.length, 0);
  const out = new Uint8Array(size);
  let off = 0;
  for (const c of chunks) {
    out.set(c, off);
    off += c.length;
  }
  return out;
}

/** Returns `dir` entries for every parent of `path` not yet in `have` (and records them). */
export function parentDirs(path: string, have: Set<string>): CpioEntry[] {
  const parts = path.split("/");
  const out: CpioEntry[] = [];
  for (let i = 1; i < parts.length; i++) {
    const p = parts.slice(0, i).join("/");
    if (!have.has(p)) {
      have.add(p);
      out.push({ kind: "dir", path: p });
    }
  }
  return out;
}
