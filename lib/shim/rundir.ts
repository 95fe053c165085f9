/**
 * Files a shim daemon group shares with the `start` command: the lock that serialises a daemon's
 * spawn against its exit, and the reservations `start` leaves for containers the daemon has been
 * promised but not yet created (each holds the runtime options `start` read from its stdin).
 */
import { SOCKET_DIR } from "./address.ts";

/** Root of the daemons' private directories. */
export const RUN_ROOT = "/run/nerdbox/shim";
/** A reservation older than this no longer keeps an idle daemon alive. */
export const RESERVATION_TTL_MS = 60_000;

/** The group's private directory (short, so VM sockets inside it fit sun_path). */
export function runDirFor(socket: string): string {
  return `${RUN_ROOT}/${socket.split("/").pop()!.slice(0, 16)}`;
}

/** Takes the lock shared by every `start` and daemon exit (flock on the socket directory). */
export async function lockSockets(): Promise<Deno.FsFile> {
  await Deno.mkdir(SOCKET_DIR, { recursive: true, mode: 0o711 });
  const f = await Deno.open(SOCKET_DIR, { read: true });
  await f.lock(true);
  return f;
}

/** Releases the lock. */
export async function unlockSockets(f: Deno.FsFile): Promise<void> {
  try {
    await f.unlock();
  } finally {
    f.close();
  }
}

/**
 * Creates the group's directory. Every level stays searchable by others (0711): VM providers such
 * as passt drop to `nobody` and must reach their socket directories below it.
 */
export async function ensureRunDir(runDir: string): Promise<void> {
  let path = "";
  for (const part of runDir.split("/").filter(Boolean)) {
    path += `/${part}`;
    if (path === "/run") continue;
    try {
      await Deno.mkdir(path, { mode: 0o711 });
    } catch (e) {
      if (!(e instanceof Deno.errors.AlreadyExists)) throw e;
    }
    if (path.startsWith(RUN_ROOT.split("/").slice(0, 3).join("/"))) {
      const st = await Deno.stat(path);
      if (st.mode !== null && (st.mode & 0o011) !== 0o011) {
        await Deno.chmod(path, (st.mode & 0o7777) | 0o011);
      }
    }
  }
}

/** Records that container `id` is about to be created in this group. */
export async function reserve(runDir: string, id: string, options: Uint8Array): Promise<void> {
  await ensureRunDir(runDir);
  await Deno.mkdir(`${runDir}/reserved`, { recursive: true, mode: 0o700 });
  await Deno.writeFile(`${runDir}/reserved/${encodeURIComponent(id)}`, options, { mode: 0o600 });
}

/** Takes (reads and removes) the reservation of `id`; its runtime options, or undefined. */
export async function takeReservation(runDir: string, id: string): Promise<Uint8Array | undefined> {
  const path = `${runDir}/reserved/${encodeURIComponent(id)}`;
  try {
    const data = await Deno.readFile(path);
    await Deno.remove(path).catch(() => {});
    return data;
  } catch {
    return undefined;
  }
}

/** Whether a reservation younger than the TTL exists (stale ones are removed). */
export async function hasFreshReservations(runDir: string, now = Date.now()): Promise<boolean> {
  let fresh = false;
  try {
    for await (const e of Deno.readDir(`${runDir}/reserved`)) {
      const path = `${runDir}/reserved/${e.name}`;
      const st = await Deno.stat(path).catch(() => null);
      if (st && st.mtime && now - st.mtime.getTime() < RESERVATION_TTL_MS) fresh = true;
      else await Deno.remove(path).catch(() => {});
    }
  } catch { /* no directory */ }
  return fresh;
}

/** Whether something accepts connections on the socket. */
export async function socketAlive(path: string): Promise<boolean> {
  try {
    const c = await Deno.connect({ transport: "unix", path });
    c.close();
    return true;
  } catch {
    return false;
  }
}
