/**
 * nerdbox: one entrypoint for every subcommand. Invoked as `containerd-shim-nerdbox-v1` it is the
 * containerd runtime v2 shim. Subcommand modules are imported lazily so each pays only for itself.
 */
import { VERSION } from "./lib/version.ts";

/** A subcommand: takes its own arguments, returns the process exit code. */
export type Subcommand = (args: string[]) => Promise<number>;

const SUBCOMMANDS: Record<string, { summary: string; load: () => Promise<Subcommand> }> = {
  run: {
    summary: "boot a microVM around a rootfs or OCI bundle and run a command in it",
    load: async () => (await import("./lib/cli/run.ts")).main,
  },
  inspect: {
    summary: "parse, validate and explain io.containerd.nerdbox.* annotations",
    load: async () => (await import("./lib/cli/inspect.ts")).main,
  },
  shim: {
    summary: "the containerd runtime v2 shim (also as containerd-shim-nerdbox-v1)",
    load: async () => (await import("./lib/cli/shim.ts")).main,
  },
  demo: {
    summary: "run the README's main job: a busybox container in a microVM with networking",
    load: async () => (await import("./lib/cli/demo.ts")).main,
  },
  vmm: {
    summary: "(internal) the per-VM process that enters libkrun",
    load: async () => (await import("./lib/cli/vmm.ts")).main,
  },
};

/** The OCI runtime verbs (lib/cli/runtime.ts); `run ID` too (see isRuntimeRun). */
const RUNTIME_VERBS: Record<string, string> = {
  spec: "write a default OCI config.json (--netns, --cwd, -- CMD…)",
  create: "create a sandbox from a bundle (OCI runtime: --bundle --pid-file --console-socket)",
  start: "start a created sandbox's workload",
  state: "print a sandbox's OCI state JSON",
  list: "list sandboxes (also: ps)",
  kill: "send a signal to a sandbox's workload (ID [SIGNAL])",
  delete: "delete a sandbox (-f: even a running one)",
  exec: "run another process in a running sandbox (ID -- CMD…)",
  logs: "print a sandbox's workload output",
  features: "print the runtime's OCI features JSON",
};
const RUNTIME_HIDDEN = ["ps", "_supervise"];

async function runtimeMain(argv: string[]): Promise<number> {
  return await (await import("./lib/cli/runtime.ts")).main(argv);
}

/** The program's top-level usage text. */
export function usage(): string {
  const lines = Object.entries(SUBCOMMANDS)
    .map(([name, c]) => `  ${name.padEnd(9)} ${c.summary}`);
  return [
    "Usage: nerdbox <command> [options]",
    "",
    "nerdbox runs each container in its own microVM and gives that VM a real network.",
    "",
    "Commands:",
    ...lines,
    "",
    "OCI runtime commands (runc's command line; run ID [-d] [--bundle DIR] too):",
    ...Object.entries(RUNTIME_VERBS).map(([name, summary]) => `  ${name.padEnd(9)} ${summary}`),
    "",
    "Options:",
    "  -h, --help     show this help (also: nerdbox <command> --help)",
    "  -V, --version  print the version",
  ].join("\n");
}

/** Dispatches argv to a subcommand and returns the exit code. */
export async function dispatch(argv: string[], invokedAs: string): Promise<number> {
  if (invokedAs.startsWith("containerd-shim-nerdbox-v1")) {
    return await (await SUBCOMMANDS.shim.load())(argv);
  }
  const [name, ...rest] = argv;
  if (name === undefined || name === "-h" || name === "--help" || name === "help") {
    console.log(usage());
    return name === undefined ? 2 : 0;
  }
  if (name === "-V" || name === "--version" || name === "version") {
    console.log(`nerdbox ${VERSION}`);
    return 0;
  }
  if (name.startsWith("-") || name in RUNTIME_VERBS || RUNTIME_HIDDEN.includes(name)) {
    return await runtimeMain(argv); // global runtime flags (--root …) come before the verb
  }
  if (name === "run") {
    const { isRuntimeRun } = await import("./lib/cli/runtime_flags.ts");
    if (isRuntimeRun(rest)) return await runtimeMain(argv);
  }
  const cmd = SUBCOMMANDS[name];
  if (!cmd) {
    console.error(`nerdbox: unknown command "${name}"\n\n${usage()}`);
    return 2;
  }
  return await (await cmd.load())(rest);
}

/**
 * The name the program was started under: NERDBOX_INVOKED_AS (set by bin/nerdbox), else argv[0]
 * from /proc/self/cmdline (a compiled binary run through the containerd-shim-nerdbox-v1 symlink;
 * Deno.execPath() would resolve the symlink).
 */
export function invokedName(): string {
  const fromLauncher = Deno.env.get("NERDBOX_INVOKED_AS");
  if (fromLauncher) return fromLauncher;
  try {
    const argv0 = Deno.readTextFileSync("/proc/self/cmdline").split("\0")[0];
    if (argv0) return argv0.split("/").pop()!;
  } catch {
    // no procfs: fall back to the executable's name
  }
  return Deno.execPath().split("/").pop() ?? "nerdbox";
}

if (import.meta.main) {
  const name = invokedName();
  // The launcher's variable must not leak into processes nerdbox starts (e.g. the shim daemon).
  Deno.env.delete("NERDBOX_INVOKED_AS");
  Deno.exitCode = await dispatch(Deno.args, name);
}
