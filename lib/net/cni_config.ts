/**
 * CNI network configuration: loads a conf dir (`*.conflist`, `*.conf`, `*.json`, sorted by file
 * name, as libcni does), validates every file with errors naming the file and the field, and
 * picks one network list by name or the first one.
 */

/** cniVersion values nerdbox speaks (Debian's plugins 1.1.1 accept exactly these). */
export const SUPPORTED_CNI_VERSIONS = ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0"];

/** One plugin of a list, as written in the file (plus its validated type). */
export interface CniPluginConf {
  /** Plugin binary name. */
  type: string;
  /** IPAM plugin binary name, when the plugin has an `ipam` section. */
  ipamType?: string;
  /** Capabilities the plugin declares (`portMappings`, …). */
  capabilities: Record<string, boolean>;
  /** The plugin object exactly as in the file. */
  raw: Record<string, unknown>;
}

/** A network list (a `.conflist`, or a single `.conf` wrapped as a list of one). */
export interface CniNetworkList {
  name: string;
  cniVersion: string;
  disableCheck: boolean;
  plugins: CniPluginConf[];
  /** File it came from ("" when built in memory). */
  file: string;
  /** The list as JSON bytes (what libcni caches as `config`). */
  bytes: Uint8Array;
}

/** A configuration file that is not a valid CNI network configuration. */
export class CniConfigError extends Error {
  /** File the error is in. */
  readonly file: string;
  /** JSON path of the bad field, e.g. `plugins[1].type` ("" for the whole file). */
  readonly field: string;
  constructor(file: string, field: string, message: string) {
    super(`CNI config ${file}${field ? `: ${field}` : ""}: ${message}`);
    this.name = "CniConfigError";
    this.file = file;
    this.field = field;
  }
}

const NAME_RE = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;
const TYPE_RE = /^[A-Za-z0-9][A-Za-z0-9_.+-]*$/;
const EXTENSIONS = [".conflist", ".conf", ".json"];

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function describe(v: unknown): string {
  return v === undefined ? "nothing" : JSON.stringify(v);
}

function pickVersion(file: string, obj: Record<string, unknown>, where: string): string {
  const versions = obj.cniVersions;
  if (versions !== undefined) {
    if (!Array.isArray(versions) || !versions.every((v) => typeof v === "string")) {
      throw new CniConfigError(file, `${where}cniVersions`, "expected an array of version strings");
    }
    const ok = SUPPORTED_CNI_VERSIONS.filter((v) => versions.includes(v));
    if (ok.length > 0) return ok[ok.length - 1];
    if (obj.cniVersion === undefined) {
      throw new CniConfigError(
        file,
        `${where}cniVersions`,
        `none of ${JSON.stringify(versions)} is supported (supported: ${
          SUPPORTED_CNI_VERSIONS.join(", ")
        })`,
      );
    }
  }
  const v = obj.cniVersion;
  if (v === undefined) return "0.1.0"; // libcni's default for a version-less config
  if (typeof v !== "string") {
    throw new CniConfigError(file, `${where}cniVersion`, `expected a string, got ${describe(v)}`);
  }
  if (!SUPPORTED_CNI_VERSIONS.includes(v)) {
    throw new CniConfigError(
      file,
      `${where}cniVersion`,
      `${JSON.stringify(v)} is not supported (supported: ${SUPPORTED_CNI_VERSIONS.join(", ")})`,
    );
  }
  return v;
}

function parsePlugin(file: string, raw: unknown, where: string): CniPluginConf {
  if (!isObject(raw)) throw new CniConfigError(file, where || "", "expected a JSON object");
  const at = (f: string) => (where ? `${where}.${f}` : f);
  const type = raw.type;
  if (typeof type !== "string" || !TYPE_RE.test(type)) {
    throw new CniConfigError(
      file,
      at("type"),
      `expected a plugin binary name ([A-Za-z0-9_.+-], no '/'), got ${describe(type)}`,
    );
  }
  let ipamType: string | undefined;
  if (raw.ipam !== undefined) {
    if (!isObject(raw.ipam)) {
      throw new CniConfigError(file, at("ipam"), `expected an object, got ${describe(raw.ipam)}`);
    }
    const t = raw.ipam.type;
    if (t !== undefined) {
      if (typeof t !== "string" || !TYPE_RE.test(t)) {
        throw new CniConfigError(
          file,
          at("ipam.type"),
          `expected a plugin binary name, got ${describe(t)}`,
        );
      }
      ipamType = t;
    }
  }
  const capabilities: Record<string, boolean> = {};
  if (raw.capabilities !== undefined) {
    if (!isObject(raw.capabilities)) {
      throw new CniConfigError(file, at("capabilities"), "expected an object of booleans");
    }
    for (const [k, v] of Object.entries(raw.capabilities)) {
      if (typeof v !== "boolean") {
        throw new CniConfigError(
          file,
          at(`capabilities.${k}`),
          `expected true or false, got ${describe(v)}`,
        );
      }
      capabilities[k] = v;
    }
  }
  return { type, ipamType, capabilities, raw };
}

function checkName(file: string, v: unknown): string {
  if (typeof v !== "string" || !NAME_RE.test(v)) {
    throw new CniConfigError(
      file,
      "name",
      `expected a network name matching ${NAME_RE.source}, got ${describe(v)}`,
    );
  }
  return v;
}

/** Parses one configuration file's text; `.conflist` files are lists, others single configs. */
export function parseCniConfig(text: string, file: string): CniNetworkList {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw new CniConfigError(file, "", `not valid JSON: ${(e as Error).message}`);
  }
  if (!isObject(doc)) throw new CniConfigError(file, "", "expected a JSON object");
  const enc = new TextEncoder();
  if (file.endsWith(".conflist")) {
    const name = checkName(file, doc.name);
    const cniVersion = pickVersion(file, doc, "");
    if (doc.disableCheck !== undefined && typeof doc.disableCheck !== "boolean") {
      throw new CniConfigError(file, "disableCheck", `expected true or false`);
    }
    if (!Array.isArray(doc.plugins) || doc.plugins.length === 0) {
      throw new CniConfigError(
        file,
        "plugins",
        `expected a non-empty array of plugin objects, got ${describe(doc.plugins)}`,
      );
    }
    const plugins = doc.plugins.map((p, i) => parsePlugin(file, p, `plugins[${i}]`));
    return {
      name,
      cniVersion,
      disableCheck: doc.disableCheck === true,
      plugins,
      file,
      bytes: enc.encode(text),
    };
  }
  if (doc.plugins !== undefined) {
    throw new CniConfigError(file, "plugins", "a list of plugins belongs in a .conflist file");
  }
  const name = checkName(file, doc.name);
  const cniVersion = pickVersion(file, doc, "");
  const plugin = parsePlugin(file, doc, "");
  const list = { cniVersion, name, plugins: [doc] };
  return {
    name,
    cniVersion,
    disableCheck: false,
    plugins: [plugin],
    file,
    bytes: enc.encode(JSON.stringify(list)),
  };
}

/** Loads and validates every configuration file in `dir`, sorted by file name. */
export async function loadCniConfigs(dir: string): Promise<CniNetworkList[]> {
  const names: string[] = [];
  try {
    for await (const e of Deno.readDir(dir)) {
      if ((e.isFile || e.isSymlink) && EXTENSIONS.some((x) => e.name.endsWith(x))) {
        names.push(e.name);
      }
    }
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new CniConfigError(dir, "", "CNI configuration directory does not exist");
    }
    throw new CniConfigError(dir, "", `cannot read directory: ${(e as Error).message}`);
  }
  names.sort();
  const lists: CniNetworkList[] = [];
  for (const n of names) {
    const file = `${dir.replace(/\/+$/, "")}/${n}`;
    lists.push(parseCniConfig(await Deno.readTextFile(file), file));
  }
  return lists;
}

/** The network named `name` from `dir`, or its first network when `name` is not given. */
export async function pickCniNetwork(dir: string, name?: string): Promise<CniNetworkList> {
  const lists = await loadCniConfigs(dir);
  if (lists.length === 0) {
    throw new CniConfigError(
      dir,
      "",
      `no CNI network configuration found (expected ${EXTENSIONS.map((x) => `*${x}`).join(", ")})`,
    );
  }
  if (name === undefined) return lists[0];
  const hit = lists.find((l) => l.name === name);
  if (!hit) {
    throw new CniConfigError(
      dir,
      "",
      `no network named ${JSON.stringify(name)} (found: ${lists.map((l) => l.name).join(", ")})`,
    );
  }
  return hit;
}
