/**
 * CNI plugin execution, the libcni way: VERSION pre-check of every plugin (and IPAM plugin),
 * ADD in order with prevResult chaining, CHECK, DEL in reverse with the cached result, a DEL of
 * the whole list after a failed ADD, and the libcni result cache
 * (`/var/lib/cni/results/<network>-<id>-<ifname>`). Plugins run in the host netns with a clean
 * environment: `PATH` (they exec iptables) plus the `CNI_*` variables. The cache is
 * lib/net/cni_cache.ts, the runtime conf, options and errors lib/net/cni_types.ts.
 */
import { refuseHostNetns } from "./host_netns.ts";
import { type CniNetworkList, SUPPORTED_CNI_VERSIONS } from "./cni_config.ts";
import {
  type CniOptions,
  CniPluginError,
  type CniRuntimeConf,
  CniRuntimeError,
} from "./cni_types.ts";
import {
  cachePath,
  type CniCacheEntry,
  DEFAULT_CNI_CACHE_DIR,
  listCacheEntries,
  listFromCache,
  readCacheEntry,
  writeCache,
} from "./cni_cache.ts";
import { type CniResult, parseCniResult } from "./cni_result.ts";
import { killAfter } from "../helper_process.ts";

/** PATH given to plugins (bridge, portmap and firewall exec iptables). */
export const PLUGIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

const ID_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;
const ARG_RE = /^[^;=\0]*$/;

function versionAtLeast(v: string, min: string): boolean {
  return SUPPORTED_CNI_VERSIONS.indexOf(v) >= SUPPORTED_CNI_VERSIONS.indexOf(min);
}

/** Checks the runtime identifiers the spec constrains; throws naming the bad one. */
export function validateRuntimeConf(rt: CniRuntimeConf): void {
  if (!ID_RE.test(rt.containerId)) {
    throw new CniRuntimeError(
      `CNI containerId ${JSON.stringify(rt.containerId)}: expected ${ID_RE.source}`,
    );
  }
  const n = rt.ifName;
  if (n === "" || n.length > 15 || n === "." || n === ".." || /[/:\s\0]/.test(n)) {
    throw new CniRuntimeError(
      `CNI ifName ${JSON.stringify(n)}: expected 1-15 characters, not "." or "..", ` +
        `without '/', ':' or whitespace`,
    );
  }
  for (const [k, v] of rt.args ?? []) {
    if (k === "" || !ARG_RE.test(k) || !ARG_RE.test(v)) {
      throw new CniRuntimeError(
        `CNI_ARGS pair ${JSON.stringify(`${k}=${v}`)}: keys and values may not contain ';' or '='`,
      );
    }
  }
}

/** `CNI_ARGS` text: `IgnoreUnknown=1;K=V;…`. */
export function cniArgsText(args: [string, string][]): string {
  return [["IgnoreUnknown", "1"], ...args].map(([k, v]) => `${k}=${v}`).join(";");
}

/** Full path of plugin `type`: the first executable regular file in `binDirs`. */
export async function findPlugin(type: string, binDirs: string[]): Promise<string> {
  for (const dir of binDirs) {
    const path = `${dir.replace(/\/+$/, "")}/${type}`;
    try {
      const st = await Deno.stat(path);
      if (st.isFile && st.mode !== null && (st.mode & 0o111) !== 0) return path;
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound || e instanceof Deno.errors.NotADirectory)) throw e;
    }
  }
  throw new CniRuntimeError(
    `failed to find plugin ${JSON.stringify(type)} in path [${binDirs.join(" ")}]`,
  );
}

interface ExecResult {
  stdout: string;
}

async function execPlugin(
  path: string,
  type: string,
  env: Record<string, string>,
  stdin: Uint8Array,
  timeoutMs: number,
): Promise<ExecResult> {
  const command = env.CNI_COMMAND;
  const child = new Deno.Command(path, {
    clearEnv: true,
    env: { PATH: PLUGIN_PATH, ...env },
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const cancelKill = killAfter(child, timeoutMs);
  try {
    const w = child.stdin.getWriter();
    await w.write(stdin).catch(() => {});
    await w.close().catch(() => {});
    const out = await child.output();
    const stdout = new TextDecoder().decode(out.stdout).trim();
    const stderr = new TextDecoder().decode(out.stderr).trim();
    if (out.signal === "SIGKILL") {
      throw new CniPluginError(type, command, `timed out after ${timeoutMs} ms (killed)`);
    }
    if (!out.success) {
      let msg = stdout || stderr || `exit status ${out.code}, no output`;
      let code: number | undefined;
      try {
        const e = JSON.parse(stdout) as { code?: unknown; msg?: unknown; details?: unknown };
        if (typeof e.msg === "string") {
          code = typeof e.code === "number" ? e.code : undefined;
          msg = `${e.msg}${typeof e.details === "string" && e.details ? ` (${e.details})` : ""}` +
            (code !== undefined ? ` [code ${code}]` : "");
        }
      } catch { /* not JSON: keep the raw text */ }
      throw new CniPluginError(type, command, msg, code);
    }
    return { stdout };
  } finally {
    cancelKill();
  }
}

function pluginTypes(list: CniNetworkList): string[] {
  const types = new Set<string>();
  for (const p of list.plugins) {
    types.add(p.type);
    if (p.ipamType) types.add(p.ipamType);
  }
  return [...types];
}

/**
 * Finds every plugin and IPAM plugin of `list` and asks each (VERSION) whether it supports the
 * list's cniVersion. Throws before anything was changed on the host.
 */
export async function checkPluginVersions(list: CniNetworkList, opts: CniOptions): Promise<void> {
  const stdin = new TextEncoder().encode(JSON.stringify({ cniVersion: list.cniVersion }));
  await Promise.all(
    pluginTypes(list).map(async (type) => {
      let path: string;
      try {
        path = await findPlugin(type, opts.binDirs);
      } catch (e) {
        throw new CniRuntimeError(
          `network ${JSON.stringify(list.name)} (${list.file || "in memory"}): ${
            (e as Error).message
          }`,
        );
      }
      const { stdout } = await execPlugin(
        path,
        type,
        { CNI_COMMAND: "VERSION" },
        stdin,
        opts.timeoutMs ?? 60_000,
      );
      let supported: string[] = [];
      try {
        const v = JSON.parse(stdout) as { supportedVersions?: unknown };
        if (Array.isArray(v.supportedVersions)) supported = v.supportedVersions.map(String);
      } catch {
        throw new CniRuntimeError(`plugin ${type} answered VERSION with non-JSON: ${stdout}`);
      }
      if (!supported.includes(list.cniVersion)) {
        throw new CniRuntimeError(
          `plugin ${type} does not support cniVersion ${list.cniVersion} ` +
            `(supports ${supported.join(",") || "nothing"})`,
        );
      }
    }),
  );
}

function pluginStdin(
  list: CniNetworkList,
  index: number,
  rt: CniRuntimeConf,
  prevResult: Record<string, unknown> | undefined,
): Uint8Array {
  const p = list.plugins[index];
  const conf: Record<string, unknown> = { ...p.raw, name: list.name, cniVersion: list.cniVersion };
  const runtimeConfig: Record<string, unknown> = {};
  for (const [cap, on] of Object.entries(p.capabilities)) {
    const v = rt.capabilityArgs?.[cap];
    if (on && v !== undefined) runtimeConfig[cap] = v;
  }
  if (Object.keys(runtimeConfig).length > 0) {
    const existing = typeof conf.runtimeConfig === "object" && conf.runtimeConfig !== null
      ? conf.runtimeConfig as Record<string, unknown>
      : {};
    conf.runtimeConfig = { ...existing, ...runtimeConfig };
  }
  if (prevResult !== undefined) conf.prevResult = prevResult;
  return new TextEncoder().encode(JSON.stringify(conf));
}

function envFor(command: string, rt: CniRuntimeConf, opts: CniOptions): Record<string, string> {
  return {
    CNI_COMMAND: command,
    CNI_CONTAINERID: rt.containerId,
    CNI_NETNS: rt.netns,
    CNI_IFNAME: rt.ifName,
    CNI_ARGS: cniArgsText(rt.args ?? []),
    CNI_PATH: opts.binDirs.join(":"),
  };
}

async function runOne(
  command: "ADD" | "CHECK" | "DEL",
  list: CniNetworkList,
  index: number,
  rt: CniRuntimeConf,
  opts: CniOptions,
  prevResult: Record<string, unknown> | undefined,
): Promise<string> {
  const type = list.plugins[index].type;
  refuseHostNetns(rt.netns, `CNI ${command} (${list.name}, plugin ${type})`);
  const path = await findPlugin(type, opts.binDirs);
  const { stdout } = await execPlugin(
    path,
    type,
    envFor(command, rt, opts),
    pluginStdin(list, index, rt, prevResult),
    opts.timeoutMs ?? 60_000,
  );
  return stdout;
}

/**
 * Attaches: refuses a duplicate (cached) attachment, VERSION-checks all plugins, ADDs in order
 * chaining prevResult, caches the final result. On a failed ADD the whole list is DELeted (in
 * reverse, every plugin even if one DEL fails) and the ADD error is thrown with the rollback's.
 */
export async function addNetworkList(
  list: CniNetworkList,
  rt: CniRuntimeConf,
  opts: CniOptions,
): Promise<CniResult> {
  validateRuntimeConf(rt);
  refuseHostNetns(rt.netns, `CNI ADD (${list.name})`);
  const cacheDir = opts.cacheDir ?? DEFAULT_CNI_CACHE_DIR;
  if (await readCacheEntry(opts, list.name, rt)) {
    throw new CniRuntimeError(
      `attachment ${list.name}/${rt.containerId}/${rt.ifName} already exists (cached at ${
        cachePath(cacheDir, list.name, rt.containerId, rt.ifName)
      }); DEL it first`,
    );
  }
  await checkPluginVersions(list, opts);
  let prev: Record<string, unknown> | undefined;
  let result: CniResult | undefined;
  for (let i = 0; i < list.plugins.length; i++) {
    const type = list.plugins[i].type;
    try {
      const out = await runOne("ADD", list, i, rt, opts, prev);
      let doc: unknown;
      try {
        doc = JSON.parse(out);
      } catch {
        throw new CniPluginError(type, "ADD", `printed a non-JSON result: ${out.slice(0, 200)}`);
      }
      result = parseCniResult(doc, `plugin ${type} (plugins[${i}]) of ${list.name}`);
      prev = result.raw;
    } catch (e) {
      const rollback = await delAll(list, rt, opts, undefined);
      const where = `network ${JSON.stringify(list.name)} plugins[${i}] (${type})`;
      const tail = rollback.length === 0
        ? "; the list was rolled back with DEL"
        : `; rollback DEL also failed: ${rollback.map((r) => r.message).join("; ")}`;
      throw new CniRuntimeError(`ADD failed at ${where}: ${(e as Error).message}${tail}`);
    }
  }
  if (!result) throw new CniRuntimeError(`network ${list.name} has no plugins`);
  try {
    await writeCache(opts, list, rt, result.raw);
  } catch (e) {
    await delAll(list, rt, opts, result.raw);
    throw new CniRuntimeError(`cannot write the CNI result cache: ${(e as Error).message}`);
  }
  return result;
}

async function delAll(
  list: CniNetworkList,
  rt: CniRuntimeConf,
  opts: CniOptions,
  cached: Record<string, unknown> | undefined,
): Promise<Error[]> {
  const errors: Error[] = [];
  const prev = versionAtLeast(list.cniVersion, "0.4.0") ? cached : undefined;
  for (let i = list.plugins.length - 1; i >= 0; i--) {
    try {
      await runOne("DEL", list, i, rt, opts, prev);
    } catch (e) {
      errors.push(e as Error);
    }
  }
  return errors;
}

/**
 * Detaches: DELs every plugin in reverse with the cached result (prevResult) and the cached
 * CNI_ARGS and capability args, then drops the cache entry. Without a cache entry it DELs with
 * what the caller gives. Every plugin is DELed even if one fails; errors are then thrown together
 * and the cache entry is kept for a later retry.
 */
export async function delNetworkList(
  list: CniNetworkList,
  rt: CniRuntimeConf,
  opts: CniOptions,
): Promise<void> {
  validateRuntimeConf(rt);
  const entry = await readCacheEntry(opts, list.name, rt);
  const effective: CniRuntimeConf = entry
    ? {
      ...rt,
      args: entry.cniArgs.filter(([k]) => k !== "IgnoreUnknown"),
      capabilityArgs: entry.capabilityArgs,
    }
    : rt;
  const errors = await delAll(list, effective, opts, entry?.result);
  if (errors.length > 0) {
    throw new CniRuntimeError(
      `DEL of network ${JSON.stringify(list.name)} for ${rt.containerId}/${rt.ifName} failed: ${
        errors.map((e) => e.message).join("; ")
      }`,
    );
  }
  const path = cachePath(
    opts.cacheDir ?? DEFAULT_CNI_CACHE_DIR,
    list.name,
    rt.containerId,
    rt.ifName,
  );
  await Deno.remove(path).catch((e) => {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  });
}

/** CHECKs every plugin in order with the cached result (cniVersion ≥ 0.4.0, not disableCheck). */
export async function checkNetworkList(
  list: CniNetworkList,
  rt: CniRuntimeConf,
  opts: CniOptions,
): Promise<void> {
  validateRuntimeConf(rt);
  if (list.disableCheck || !versionAtLeast(list.cniVersion, "0.4.0")) return;
  const entry = await readCacheEntry(opts, list.name, rt);
  if (!entry) {
    throw new CniRuntimeError(
      `CHECK: no cached result for ${list.name}/${rt.containerId}/${rt.ifName} (not attached?)`,
    );
  }
  const effective = { ...rt, capabilityArgs: entry.capabilityArgs };
  for (let i = 0; i < list.plugins.length; i++) {
    await runOne("CHECK", list, i, effective, opts, entry.result);
  }
}

/**
 * GC the libcni way for 1.0.0 plugins: DELs (with its own cached config, args and result) every
 * cached attachment for which `isStale` says yes, and drops its entry. Returns the errors met.
 */
export async function gcCachedAttachments(
  opts: CniOptions,
  isStale: (entry: CniCacheEntry) => boolean | Promise<boolean>,
): Promise<string[]> {
  const { entries, errors } = await listCacheEntries(opts);
  for (const { path, entry } of entries) {
    if (!(await isStale(entry))) continue;
    try {
      const list = listFromCache(entry, path);
      await delNetworkList(list, {
        containerId: entry.containerId,
        ifName: entry.ifName,
        netns: entry.netns,
      }, opts);
    } catch (e) {
      errors.push(`${path}: ${(e as Error).message}`);
    }
  }
  return errors;
}
