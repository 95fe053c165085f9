/**
 * What the CNI runner (lib/net/cni.ts) is given for one attachment (the runtime conf and where
 * plugins and the cache live) and the errors it throws.
 */

/** What identifies one attachment of a sandbox to a network. */
export interface CniRuntimeConf {
  /** `CNI_CONTAINERID`: `^[A-Za-z0-9][A-Za-z0-9_.-]*$`. */
  containerId: string;
  /** `CNI_NETNS`: path of the sandbox netns. */
  netns: string;
  /** `CNI_IFNAME`: interface name inside the netns. */
  ifName: string;
  /** Extra `CNI_ARGS` pairs; `IgnoreUnknown=1` is always sent first. */
  args?: [string, string][];
  /** Runtime values for capabilities, e.g. `{portMappings: [...]}`. */
  capabilityArgs?: Record<string, unknown>;
}

/** Where plugins and the cache live. */
export interface CniOptions {
  /** Directories searched for plugin binaries, in order (also `CNI_PATH`). */
  binDirs: string[];
  /** Result cache directory (default /var/lib/cni/results). */
  cacheDir?: string;
  /** Per plugin call (default 60 s); the plugin is killed after it. */
  timeoutMs?: number;
}

/** A plugin answered with an error (or not at all). */
export class CniPluginError extends Error {
  /** Plugin binary name. */
  readonly plugin: string;
  /** CNI_COMMAND. */
  readonly command: string;
  /** CNI error code (undefined when the plugin printed no error object). */
  readonly code?: number;
  constructor(plugin: string, command: string, message: string, code?: number) {
    super(`CNI plugin ${plugin} ${command} failed: ${message}`);
    this.name = "CniPluginError";
    this.plugin = plugin;
    this.command = command;
    this.code = code;
  }
}

/** A runtime-side refusal or failure (missing plugin, version, duplicate ADD, cache). */
export class CniRuntimeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "CniRuntimeError";
  }
}
