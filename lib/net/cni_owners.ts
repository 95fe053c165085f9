/**
 * The bookkeeping behind CNI sessions: one owner record per live session under
 * `<stateDir>/owners/`, the lock that serialises sessions and crash GC, and whether an owner is
 * still alive (its pid with the same start time).
 */
import { processStartTime } from "../proc.ts";

/** Who holds a CNI session: written before ADD, removed after a clean DEL (crash GC reads it). */
export interface OwnerRecord {
  /** The owning nerdbox process. */
  pid: number;
  /** Its start time (field 22 of /proc/PID/stat), so a reused pid is not taken for it. */
  start: string;
  /** Sandbox id (CNI_CONTAINERID). */
  id: string;
  /** The netns name under /run/netns. */
  netnsName: string;
  /** The CNI network list's name. */
  network: string;
  /** Interface name in the netns. */
  ifName: string;
  /** Base64 of the list, so a crashed run can be DELed even without a cache entry. */
  config: string;
  /** The capability args the ADD got (the DEL gets the same). */
  capabilityArgs: Record<string, unknown>;
}

/** Whether the record's owner process is still the one that wrote it. */
export async function ownerAlive(o: OwnerRecord): Promise<boolean> {
  return o.pid > 0 && (await processStartTime(o.pid)) === o.start;
}

/** The owner records in `stateDir` (half-written ones skipped). */
export async function readOwners(
  stateDir: string,
): Promise<{ path: string; owner: OwnerRecord }[]> {
  const out: { path: string; owner: OwnerRecord }[] = [];
  try {
    for await (const e of Deno.readDir(`${stateDir}/owners`)) {
      if (!e.name.endsWith(".json")) continue;
      const path = `${stateDir}/owners/${e.name}`;
      try {
        out.push({ path, owner: JSON.parse(await Deno.readTextFile(path)) as OwnerRecord });
      } catch { /* half-written: its writer is alive or it is garbage; skip */ }
    }
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  return out;
}

/** Runs `fn` holding `stateDir`'s lock file (creating the directory). */
export async function withLock<T>(stateDir: string, fn: () => Promise<T>): Promise<T> {
  await Deno.mkdir(stateDir, { recursive: true, mode: 0o700 });
  const f = await Deno.open(`${stateDir}/lock`, { create: true, write: true, mode: 0o600 });
  try {
    await f.lock(true);
    return await fn();
  } finally {
    f.close();
  }
}

/** Whether any owner record in `stateDir` (but `exceptPath`) belongs to a live process. */
export async function anyOwnerAlive(stateDir: string, exceptPath?: string): Promise<boolean> {
  for (const o of await readOwners(stateDir)) {
    if (o.path !== exceptPath && await ownerAlive(o.owner)) return true;
  }
  return false;
}
