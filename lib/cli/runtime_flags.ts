/**
 * The runtime CLI's command line (runc's, with runsc's Go-style single-dash spellings): global
 * flags before the verb, then per-verb flags. Everything is parsed here, into typed values.
 */
import { parseArgs } from "node:util";
import { RUNTIME_STATE_ROOT, RuntimeError } from "../runtime/state.ts";

/** Global flags (before the verb). */
export interface GlobalFlags {
  root: string;
  log?: string;
  logFormat: "text" | "json";
  systemdCgroup: boolean;
  debug: boolean;
}

type Opt = { type: "string" | "boolean"; short?: string; multiple?: boolean };

const GLOBAL: Record<string, Opt> = {
  root: { type: "string" },
  log: { type: "string" },
  "log-format": { type: "string" },
  "systemd-cgroup": { type: "boolean" },
  debug: { type: "boolean" },
  rootless: { type: "string" },
  criu: { type: "string" },
};

/** Every runtime verb with its flags. */
export const VERB_FLAGS: Record<string, Record<string, Opt>> = {
  spec: {
    bundle: { type: "string", short: "b" },
    netns: { type: "string" },
    cwd: { type: "string" },
    rootless: { type: "boolean" },
  },
  create: {
    bundle: { type: "string", short: "b" },
    "pid-file": { type: "string" },
    "console-socket": { type: "string" },
    "no-pivot": { type: "boolean" },
    "no-new-keyring": { type: "boolean" },
    "preserve-fds": { type: "string" },
  },
  run: {
    bundle: { type: "string", short: "b" },
    "pid-file": { type: "string" },
    "console-socket": { type: "string" },
    detach: { type: "boolean", short: "d" },
    "no-pivot": { type: "boolean" },
    "no-new-keyring": { type: "boolean" },
    "preserve-fds": { type: "string" },
    keep: { type: "boolean" },
  },
  start: {},
  state: {},
  list: { format: { type: "string", short: "f" }, quiet: { type: "boolean", short: "q" } },
  ps: { format: { type: "string", short: "f" } },
  kill: { all: { type: "boolean", short: "a" } },
  delete: { force: { type: "boolean", short: "f" } },
  exec: {
    process: { type: "string", short: "p" },
    detach: { type: "boolean", short: "d" },
    "pid-file": { type: "string" },
    "console-socket": { type: "string" },
    tty: { type: "boolean", short: "t" },
    env: { type: "string", short: "e", multiple: true },
    cwd: { type: "string" },
    user: { type: "string", short: "u" },
    cap: { type: "string", multiple: true },
    "preserve-fds": { type: "string" },
    "no-new-privs": { type: "boolean" },
    "process-label": { type: "string" },
    apparmor: { type: "string" },
  },
  logs: {},
  features: {},
  _supervise: { console: { type: "string" } },
};

/** A parsed invocation: globals, the verb, its flags and positionals, and what follows `--`. */
export interface RuntimeArgs {
  global: GlobalFlags;
  verb: string;
  flags: Record<string, string | boolean | string[] | undefined>;
  positionals: string[];
  /** Arguments after `--` (undefined when there was no `--`). */
  command?: string[];
}

/** `-flag` / `-flag=v` (Go style, as runsc spells them) → `--flag` / `--flag=v`; `-d` unchanged. */
export function normalizeDashes(args: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === "--") return [...out, ...args.slice(i)];
    out.push(/^-[A-Za-z][A-Za-z-]+(=.*)?$/s.test(a) ? `-${a}` : a);
  }
  return out;
}

function parse(args: string[], options: Record<string, Opt>, what: string) {
  try {
    return parseArgs({ args, options, allowPositionals: true, strict: true });
  } catch (e) {
    throw new RuntimeError(`${what}: ${(e as Error).message}`);
  }
}

/** Parses a whole runtime command line (after `nerdbox`). */
export function parseRuntimeArgs(argv: string[]): RuntimeArgs {
  const dd = argv.indexOf("--");
  const before = normalizeDashes(dd < 0 ? argv : argv.slice(0, dd));
  const command = dd < 0 ? undefined : argv.slice(dd + 1);
  // Globals run up to the first token that is a verb.
  const verbAt = before.findIndex((a, i) =>
    a in VERB_FLAGS && !(i > 0 && GLOBAL[before[i - 1].replace(/^--/, "")]?.type === "string")
  );
  if (verbAt < 0) {
    throw new RuntimeError(
      `expected a command: one of ${
        Object.keys(VERB_FLAGS).filter((v) => v[0] !== "_").join(", ")
      }`,
    );
  }
  const g = parse(before.slice(0, verbAt), GLOBAL, "global flags");
  if (g.positionals.length > 0) {
    throw new RuntimeError(`unknown command ${JSON.stringify(g.positionals[0])}`);
  }
  const logFormat = (g.values["log-format"] as string | undefined) ?? "text";
  if (logFormat !== "text" && logFormat !== "json") {
    throw new RuntimeError(`--log-format: ${JSON.stringify(logFormat)}: expected text or json`);
  }
  const verb = before[verbAt];
  let rest = before.slice(verbAt + 1);
  let cmd = command;
  if (verb === "exec" && cmd === undefined) {
    // runc's `exec [flags] ID CMD ARG…`: the command starts after the id, flags and all.
    const raw = dd < 0 ? argv : argv.slice(0, dd);
    const at = firstPositional(rest, VERB_FLAGS.exec);
    if (at >= 0 && at + 1 < rest.length) {
      const rawAt = raw.length - (rest.length - at);
      cmd = raw.slice(rawAt + 1);
      rest = rest.slice(0, at + 1);
    }
  }
  const v = parse(rest, VERB_FLAGS[verb], verb);
  const global: GlobalFlags = {
    root: (g.values.root as string | undefined) ?? RUNTIME_STATE_ROOT,
    logFormat,
    systemdCgroup: g.values["systemd-cgroup"] === true,
    debug: g.values.debug === true,
    ...(g.values.log !== undefined ? { log: g.values.log as string } : {}),
  };
  if (!global.root.startsWith("/")) global.root = `${Deno.cwd()}/${global.root}`;
  return {
    global,
    verb,
    flags: v.values as RuntimeArgs["flags"],
    positionals: v.positionals,
    ...(cmd !== undefined ? { command: cmd } : {}),
  };
}

/** Index of the first positional in `args` (skipping string flags' values), or -1. */
function firstPositional(args: string[], options: Record<string, Opt>): number {
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (!a.startsWith("-") || a === "-") return i;
    if (a.includes("=")) continue;
    const name = a.startsWith("--")
      ? a.slice(2)
      : Object.entries(options).find(([, o]) => o.short === a.slice(1))?.[0];
    if (name !== undefined && options[name]?.type === "string") i++;
  }
  return -1;
}

/** What runc accepts as a container id; a ROOTFS path (it has a `/`) never matches. */
const CONTAINER_ID = /^[\w+.-]+$/;

/**
 * True when `nerdbox run …` is the runtime verb (`run [-d] [--bundle DIR] ID`) rather than the
 * boot-a-rootfs command (`run ROOTFS -- CMD`, `run --bundle DIR [-- CMD]`): no `--`, only flags
 * the runtime's `run` knows, and exactly one positional that is a container id.
 */
export function isRuntimeRun(args: string[]): boolean {
  const norm = normalizeDashes(args);
  if (norm.includes("--")) return false;
  const options = VERB_FLAGS.run;
  const positionals: string[] = [];
  for (let i = 0; i < norm.length; i++) {
    const a = norm[i];
    if (!a.startsWith("-") || a === "-") {
      positionals.push(a);
      continue;
    }
    const bare = a.replace(/=.*$/s, "");
    const name = bare.startsWith("--")
      ? bare.slice(2)
      : Object.entries(options).find(([, o]) => o.short === bare.slice(1))?.[0];
    if (name === undefined || !(name in options)) return false; // a boot-command flag
    if (options[name].type === "string" && !a.includes("=")) i++;
  }
  return positionals.length === 1 && CONTAINER_ID.test(positionals[0]);
}

const SIGNALS: Record<string, number> = {
  HUP: 1,
  INT: 2,
  QUIT: 3,
  ILL: 4,
  TRAP: 5,
  ABRT: 6,
  IOT: 6,
  BUS: 7,
  FPE: 8,
  KILL: 9,
  USR1: 10,
  SEGV: 11,
  USR2: 12,
  PIPE: 13,
  ALRM: 14,
  TERM: 15,
  STKFLT: 16,
  CHLD: 17,
  CONT: 18,
  STOP: 19,
  TSTP: 20,
  TTIN: 21,
  TTOU: 22,
  URG: 23,
  XCPU: 24,
  XFSZ: 25,
  VTALRM: 26,
  PROF: 27,
  WINCH: 28,
  IO: 29,
  POLL: 29,
  PWR: 30,
  SYS: 31,
};

/** Parses a signal: a number 1-64, or a name with or without SIG (any case). */
export function parseSignal(text: string): number {
  if (/^\d+$/.test(text)) {
    const n = Number(text);
    if (n >= 1 && n <= 64) return n;
  } else {
    const name = text.toUpperCase().replace(/^SIG/, "");
    if (SIGNALS[name] !== undefined) return SIGNALS[name];
    const rt = /^RTMIN(?:\+(\d+))?$/.exec(name);
    if (rt && 34 + Number(rt[1] ?? 0) <= 64) return 34 + Number(rt[1] ?? 0);
  }
  throw new RuntimeError(
    `unknown signal ${JSON.stringify(text)}: expected a name such as TERM, SIGKILL or HUP, ` +
      "or a number from 1 to 64",
  );
}
