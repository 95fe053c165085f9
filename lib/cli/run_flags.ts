/**
 * `nerdbox run`'s flags: the table (parseArgs options + help lines), the usage text and the
 * parser into RunFlags (strings as given; lib/spec validates them).
 */
import { parseArgs } from "node:util";
import { KRUN_LOG_LEVEL, type KrunLogLevelName } from "../../ffi/libkrun_symbols.ts";
import type { Accel } from "../vm/types.ts";
import { CNI_RUN_FLAGS, type CniRunFlags, cniRunFlags } from "./cni_flags.ts";

/**
 * The flag table. Each entry: parseArgs option + help line. Other features add their flags as a
 * block here (and read them from `RunFlags`).
 */
const FLAGS = {
  bundle: {
    type: "string",
    help: "--bundle DIR          run an OCI bundle (config.json + rootfs)",
  },
  net: {
    type: "string",
    multiple: true,
    help:
      "--net SPEC            attach a network (network annotation grammar; repeatable, in order)",
  },
  publish: {
    type: "string",
    short: "p",
    multiple: true,
    help: "-p, --publish [IP:]HOST:GUEST[/tcp|/udp]  publish a port (no network attached)",
  },
  cpus: { type: "string", help: "--cpus N              vCPUs (1-255, default 1)" },
  memory: { type: "string", help: "--memory SIZE         memory: MiB, or 512M / 1G (default 512)" },
  env: {
    type: "string",
    short: "e",
    multiple: true,
    help: "-e, --env K=V|K        set an env var (K alone: from this environment)",
  },
  workdir: {
    type: "string",
    short: "w",
    help: "-w, --workdir DIR     working directory in the container",
  },
  hostname: { type: "string", help: "--hostname NAME       guest hostname (default: from the id)" },
  name: { type: "string", help: "--name ID             sandbox id (default: run-<random>)" },
  interactive: {
    type: "boolean",
    short: "i",
    help: "-i, --interactive     forward stdin to the workload",
  },
  tty: {
    type: "boolean",
    short: "t",
    help: "-t, --tty             give the workload a terminal (its controlling tty; use with -i)",
  },
  backend: { type: "string", help: "--backend B           auto | libkrun | qemu (default auto)" },
  accel: {
    type: "string",
    help: "--accel A             QEMU accelerator: auto | kvm | tcg (default auto)",
  },
  netns: { type: "string", help: "--netns PATH          run the VMM in this network namespace" },
  libkrun: {
    type: "string",
    help: "--libkrun PATH        libkrun library (else NERDBOX_LIBKRUN, then system dirs)",
  },
  "log-level": {
    type: "string",
    help:
      "--log-level L         libkrun log: off|error|warn|info|debug|trace or 0-5 (shown on stderr)",
  },
  "dry-run": {
    type: "boolean",
    help: "--dry-run             print the plan (and libkrun calls applied to a real context)",
  },
  json: { type: "boolean", help: "--json                with --dry-run: one JSON object" },
  ...CNI_RUN_FLAGS,
  help: { type: "boolean", short: "h", help: "-h, --help            show this help" },
} as const;

/** The usage text. */
export function usage(): string {
  return [
    "Usage: nerdbox run [flags] ROOTFS -- CMD [ARG...]",
    "       nerdbox run [flags] --bundle DIR [-- CMD [ARG...]]",
    "",
    "Boots a microVM around ROOTFS (a directory) or an OCI bundle and runs the command in it.",
    "Exit status: the command's; 125 when nerdbox itself fails.",
    "",
    "Flags:",
    ...Object.values(FLAGS).map((f) => `  ${f.help}`),
  ].join("\n");
}

/** Flags as parsed (strings as given; lib/spec validates them). */
export interface RunFlags {
  bundle?: string;
  net: string[];
  publish: string[];
  cpus?: string;
  memory?: string;
  env: string[];
  workdir?: string;
  hostname?: string;
  name?: string;
  interactive: boolean;
  /** `-t`: the workload gets a pty in the guest. */
  tty: boolean;
  backend?: string;
  accel: Accel;
  netns?: string;
  libkrun?: string;
  logLevel?: number;
  dryRun: boolean;
  json: boolean;
  help: boolean;
  /** Positionals before `--`. */
  positionals: string[];
  /** Everything after `--`. */
  command: string[];
  /** `--cni` and its options (lib/net/cni_session.ts). */
  cni?: CniRunFlags;
}

/** A flag error (exit 125). */
export class RunUsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "RunUsageError";
  }
}

/** Parses `--log-level` (name or 0-5). */
export function parseLogLevel(text: string): number {
  if (/^[0-5]$/.test(text)) return Number(text);
  const n = KRUN_LOG_LEVEL[text.toLowerCase() as KrunLogLevelName];
  if (n === undefined) {
    throw new RunUsageError(
      `--log-level: ${JSON.stringify(text)}: expected off, error, warn, info, debug, trace or 0-5`,
    );
  }
  return n;
}

/** Parses `--accel`. */
export function parseAccel(text: string): Accel {
  if (text === "auto" || text === "kvm" || text === "tcg") return text;
  throw new RunUsageError(`--accel: ${JSON.stringify(text)}: expected auto, kvm or tcg`);
}

/** Parses argv (after `run`). */
export function parseRunFlags(argv: string[]): RunFlags {
  const dd = argv.indexOf("--");
  const before = dd < 0 ? argv : argv.slice(0, dd);
  const command = dd < 0 ? [] : argv.slice(dd + 1);
  const options = Object.fromEntries(
    Object.entries(FLAGS).map(([k, f]) => {
      const { help: _help, ...opt } = f;
      return [k, opt];
    }),
  ) as Record<string, { type: "string" | "boolean"; short?: string; multiple?: boolean }>;
  let values: Record<string, unknown>;
  let positionals: string[];
  try {
    ({ values, positionals } = parseArgs({
      args: before,
      options,
      allowPositionals: true,
      strict: true,
    }));
  } catch (e) {
    throw new RunUsageError((e as Error).message);
  }
  const s = (k: string) => values[k] as string | undefined;
  const list = (k: string) => (values[k] as string[] | undefined) ?? [];
  return {
    ...(s("bundle") !== undefined ? { bundle: s("bundle") } : {}),
    net: list("net"),
    publish: list("publish"),
    ...(s("cpus") !== undefined ? { cpus: s("cpus") } : {}),
    ...(s("memory") !== undefined ? { memory: s("memory") } : {}),
    env: list("env"),
    ...(s("workdir") !== undefined ? { workdir: s("workdir") } : {}),
    ...(s("hostname") !== undefined ? { hostname: s("hostname") } : {}),
    ...(s("name") !== undefined ? { name: s("name") } : {}),
    interactive: values.interactive === true,
    tty: values.tty === true,
    ...(s("backend") !== undefined ? { backend: s("backend") } : {}),
    accel: s("accel") === undefined ? "auto" : parseAccel(s("accel")!),
    ...(s("netns") !== undefined ? { netns: s("netns") } : {}),
    ...(s("libkrun") !== undefined ? { libkrun: s("libkrun") } : {}),
    ...(s("log-level") !== undefined ? { logLevel: parseLogLevel(s("log-level")!) } : {}),
    dryRun: values["dry-run"] === true,
    json: values.json === true,
    help: values.help === true,
    positionals,
    command,
    ...cniRunFlags(values),
  };
}
