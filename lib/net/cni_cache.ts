/**
 * The libcni result cache (`/var/lib/cni/results/<network>-<id>-<ifname>`, `kind: cniCacheV1`):
 * what the CNI runner (lib/net/cni.ts) writes after an ADD and reads back for CHECK, DEL and GC.
 */
import { type CniNetworkList, parseCniConfig } from "./cni_config.ts";
import { type CniOptions, type CniRuntimeConf, CniRuntimeError } from "./cni_types.ts";

/** Where libcni keeps its result cache. */
export const DEFAULT_CNI_CACHE_DIR = "/var/lib/cni/results";
/** One libcni cache entry (`kind: cniCacheV1`). */
export interface CniCacheEntry {
  kind: "cniCacheV1";
  containerId: string;
  ifName: string;
  networkName: string;
  netns: string;
  /** Base64 of the network list JSON. */
  config: string;
  cniArgs: [string, string][];
  capabilityArgs: Record<string, unknown>;
  result: Record<string, unknown>;
}

/** Path of the libcni cache entry of one attachment. */
export function cachePath(cacheDir: string, network: string, containerId: string, ifName: string) {
  return `${cacheDir}/${network}-${containerId}-${ifName}`;
}

/** Reads the cache entry of an attachment, or undefined when there is none. */
export async function readCacheEntry(
  opts: CniOptions,
  network: string,
  rt: Pick<CniRuntimeConf, "containerId" | "ifName">,
): Promise<CniCacheEntry | undefined> {
  const path = cachePath(
    opts.cacheDir ?? DEFAULT_CNI_CACHE_DIR,
    network,
    rt.containerId,
    rt.ifName,
  );
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw e;
  }
  try {
    const e = JSON.parse(text) as CniCacheEntry;
    if (e.kind !== "cniCacheV1" || typeof e.config !== "string") throw new Error("wrong kind");
    return e;
  } catch (err) {
    throw new CniRuntimeError(`CNI cache entry ${path} is corrupt: ${(err as Error).message}`);
  }
}

/** The network list stored in a cache entry. */
export function listFromCache(entry: CniCacheEntry, path = "cache"): CniNetworkList {
  const bin = atob(entry.config);
  const bytes = Uint8Array.from(bin, (c) => c.charCodeAt(0));
  return parseCniConfig(new TextDecoder().decode(bytes), `${path}.conflist`);
}

function b64(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s);
}

/** Writes the cache entry of an attachment (atomically: a temp file renamed into place). */
export async function writeCache(
  opts: CniOptions,
  list: CniNetworkList,
  rt: CniRuntimeConf,
  result: Record<string, unknown>,
): Promise<void> {
  const dir = opts.cacheDir ?? DEFAULT_CNI_CACHE_DIR;
  await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
  const entry: CniCacheEntry = {
    kind: "cniCacheV1",
    containerId: rt.containerId,
    ifName: rt.ifName,
    networkName: list.name,
    netns: rt.netns,
    config: b64(list.bytes),
    cniArgs: [["IgnoreUnknown", "1"], ...(rt.args ?? [])],
    capabilityArgs: rt.capabilityArgs ?? {},
    result,
  };
  const path = cachePath(dir, list.name, rt.containerId, rt.ifName);
  const tmp = `${path}.tmp-${Deno.pid}`;
  await Deno.writeTextFile(tmp, JSON.stringify(entry), { mode: 0o600 });
  await Deno.rename(tmp, path);
}

/** Every cache entry in the cache dir (corrupt files are reported, not fatal). */
export async function listCacheEntries(
  opts: CniOptions,
): Promise<{ entries: { path: string; entry: CniCacheEntry }[]; errors: string[] }> {
  const dir = opts.cacheDir ?? DEFAULT_CNI_CACHE_DIR;
  const entries: { path: string; entry: CniCacheEntry }[] = [];
  const errors: string[] = [];
  try {
    for await (const e of Deno.readDir(dir)) {
      if (!e.isFile || e.name.includes(".tmp-")) continue;
      const path = `${dir}/${e.name}`;
      try {
        const entry = JSON.parse(await Deno.readTextFile(path)) as CniCacheEntry;
        if (entry.kind === "cniCacheV1") entries.push({ path, entry });
      } catch (err) {
        errors.push(`${path}: ${(err as Error).message}`);
      }
    }
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  return { entries, errors };
}
