/**
 * `nerdbox run`'s `--cni*` flags: their table (parseArgs options + help lines), their parser into
 * CniRunFlags, and `attachSpecToCni`, which starts the CNI session (lib/net/cni_session.ts) they
 * ask for and points the spec at it.
 */
import type { PortSpec } from "../spec/types.ts";
import {
  type CniSession,
  DEFAULT_CNI_BIN_DIR,
  DEFAULT_CNI_CONF_DIR,
  podPorts,
  startCniSession,
} from "../net/cni_session.ts";

/** `nerdbox run` flags for CNI, in run.ts's flag-table shape (parseArgs option + help line). */
export const CNI_RUN_FLAGS = {
  cni: {
    type: "boolean",
    help: "--cni                 create a netns and attach it with the CNI plugins (DEL on exit)",
  },
  "cni-conf-dir": {
    type: "string",
    help: `--cni-conf-dir DIR    CNI configurations (default ${DEFAULT_CNI_CONF_DIR})`,
  },
  "cni-bin-dir": {
    type: "string",
    help: `--cni-bin-dir DIRS    CNI plugin dirs, ':'-separated (default ${DEFAULT_CNI_BIN_DIR})`,
  },
  "cni-network": {
    type: "string",
    help: "--cni-network NAME    CNI network to use (default: the first configuration)",
  },
} as const;

/** What `--cni*` flags asked for. */
export interface CniRunFlags {
  confDir: string;
  binDir: string;
  network?: string;
}

/** The `--cni*` values from parseArgs output; `cni` is absent without `--cni`. */
export function cniRunFlags(values: Record<string, unknown>): { cni?: CniRunFlags } {
  const s = (k: string) => typeof values[k] === "string" ? values[k] as string : undefined;
  const extra = ["cni-conf-dir", "cni-bin-dir", "cni-network"].filter((k) => s(k) !== undefined);
  if (values.cni !== true) {
    if (extra.length > 0) throw new Error(`--${extra[0]} needs --cni`);
    return {};
  }
  return {
    cni: {
      confDir: s("cni-conf-dir") ?? DEFAULT_CNI_CONF_DIR,
      binDir: s("cni-bin-dir") ?? DEFAULT_CNI_BIN_DIR,
      ...(s("cni-network") !== undefined ? { network: s("cni-network") } : {}),
    },
  };
}

/**
 * `nerdbox run --cni`: attaches a new netns for `spec` (ports → portMappings) and points the spec
 * at it (`netns`, ports as served inside the pod). The caller tears down in a `finally`.
 */
export async function attachSpecToCni(
  spec: { id: string; netns?: string; ports: PortSpec[] },
  flags: CniRunFlags,
): Promise<CniSession> {
  if (spec.netns !== undefined) {
    throw new Error(
      `--cni makes its own network namespace; it cannot be combined with --netns or a bundle's ` +
        `network namespace (${spec.netns})`,
    );
  }
  const session = await startCniSession({
    id: spec.id,
    confDir: flags.confDir,
    binDir: flags.binDir,
    ...(flags.network !== undefined ? { network: flags.network } : {}),
    ports: spec.ports,
    handleSignals: false, // run forwards signals to the workload and tears down in its finally
  });
  spec.netns = session.netnsPath;
  spec.ports = podPorts(spec.ports);
  return session;
}
