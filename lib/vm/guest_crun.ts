/**
 * crun in the guest image: Debian's dynamically linked `/usr/bin/crun` goes on the runtime disk
 * at GUEST_CRUN_PATH, and every library it needs that the guest root does not already carry
 * (Deno's libc and loader are there) goes to GUEST_CRUN_LIB_DIR, its LD_LIBRARY_PATH in the guest.
 */
import { GUEST_CRUN_LIB_DIR, GUEST_CRUN_PATH } from "../guest_protocol.ts";

/** Where the host's crun is taken from (Debian's `crun` package). */
export const HOST_CRUN = "/usr/bin/crun";

/** One file to put on the runtime disk: path relative to the runtime dir, host file. */
export type RuntimeFile = [relPath: string, hostFile: string];

/**
 * The files crun needs in the guest, relative to the runtime dir (`/opt/nerdbox`), given the
 * libraries `sharedLibs` reports for it and the guest paths already present (`have`). Empty
 * when the host has no crun: the guest then says so when a spec asks for it.
 */
export async function crunRuntimeFiles(
  sharedLibs: (binary: string) => Promise<Array<[string, string]>>,
  have: ReadonlySet<string>,
  hostCrun = HOST_CRUN,
): Promise<RuntimeFile[]> {
  try {
    if (!(await Deno.stat(hostCrun)).isFile) return [];
  } catch {
    return [];
  }
  const rt = "/opt/nerdbox/";
  const files: RuntimeFile[] = [[GUEST_CRUN_PATH.slice(rt.length), await Deno.realPath(hostCrun)]];
  for (const [guestPath, hostFile] of await sharedLibs(hostCrun)) {
    if (have.has(guestPath)) continue;
    const name = guestPath.slice(guestPath.lastIndexOf("/") + 1);
    files.push([`${GUEST_CRUN_LIB_DIR.slice(rt.length)}/${name}`, hostFile]);
  }
  return files;
}

/** Copies `files` under the runtime dir `rt` (mode 0755). */
export async function installRuntimeFiles(rt: string, files: RuntimeFile[]): Promise<void> {
  for (const [rel, host] of files) {
    const dest = `${rt}/${rel}`;
    await Deno.mkdir(dest.slice(0, dest.lastIndexOf("/")), { recursive: true });
    await Deno.copyFile(host, dest);
    await Deno.chmod(dest, 0o755);
  }
}
