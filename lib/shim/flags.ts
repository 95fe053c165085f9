/**
 * The shim's command line as containerd writes it: Go-style flags (`-namespace ns`, `--namespace=ns`
 * and `-debug` all work) followed by the action (`start`, `delete`, or nerdbox's internal `serve`).
 */

/** Parsed shim invocation. */
export interface ShimFlags {
  namespace: string;
  /** containerd's gRPC address (`-address`). */
  address: string;
  /** containerd's own binary, for the legacy `publish` events path. */
  publishBinary: string;
  id: string;
  bundle: string;
  debug: boolean;
  /** `-v`: print the version and exit. */
  version: boolean;
  /** `-info`: print the RuntimeInfo protobuf (options read from stdin) and exit. */
  info: boolean;
  /** `start`, `delete`, `serve`, or "" when none was given. */
  action: string;
  /** Positional arguments after the action. */
  rest: string[];
}

const STRING_FLAGS: Record<string, keyof ShimFlags> = {
  namespace: "namespace",
  address: "address",
  "publish-binary": "publishBinary",
  id: "id",
  bundle: "bundle",
  socket: "socket" as keyof ShimFlags, // accepted and ignored (older callers)
};

/** Thrown for a command line the shim cannot use; the message names the flag. */
export class FlagError extends Error {
  /** Builds the error. */
  constructor(message: string) {
    super(message);
    this.name = "FlagError";
  }
}

/** Parses argv (without the program name). */
export function parseShimFlags(argv: string[]): ShimFlags {
  const out: ShimFlags = {
    namespace: "",
    address: "",
    publishBinary: "",
    id: "",
    bundle: "",
    debug: false,
    version: false,
    info: false,
    action: "",
    rest: [],
  };
  let i = 0;
  for (; i < argv.length; i++) {
    const arg = argv[i];
    if (!arg.startsWith("-") || arg === "-" || arg === "--") {
      if (arg === "--") i++;
      break;
    }
    const body = arg.replace(/^--?/, "");
    const eq = body.indexOf("=");
    const name = eq >= 0 ? body.slice(0, eq) : body;
    if (name === "debug" || name === "v" || name === "info") {
      const v = eq >= 0 ? body.slice(eq + 1) : "true";
      if (
        !["1", "t", "T", "true", "TRUE", "True", "0", "f", "F", "false", "FALSE", "False"].includes(
          v,
        )
      ) {
        throw new FlagError(`invalid boolean value ${JSON.stringify(v)} for flag -${name}`);
      }
      const on = ["1", "t", "T", "true", "TRUE", "True"].includes(v);
      if (name === "debug") out.debug = on;
      else if (name === "info") out.info = on;
      else out.version = on;
      continue;
    }
    const key = STRING_FLAGS[name];
    if (!key) throw new FlagError(`flag provided but not defined: -${name}`);
    let value: string;
    if (eq >= 0) value = body.slice(eq + 1);
    else {
      if (i + 1 >= argv.length) throw new FlagError(`flag needs an argument: -${name}`);
      value = argv[++i];
    }
    if (key !== ("socket" as keyof ShimFlags)) {
      (out as unknown as Record<string, string>)[key] = value;
    }
  }
  out.action = argv[i] ?? "";
  out.rest = argv.slice(i + 1);
  return out;
}
