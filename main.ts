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
  const cmd = SUBCOMMANDS[name];
  if (!cmd) {
    console.error(`nerdbox: unknown command "${name}"\n\n${usage()}`);
    return 2;
  }
  return await (await cmd.load())(rest);
}

if (import.meta.main) {
  const invokedAs = Deno.env.get("NERDBOX_INVOKED_AS") ??
    Deno.execPath().split("/").pop() ?? "nerdbox";
  Deno.exitCode = await dispatch(Deno.args, invokedAs);
}
