/**
 * passt as a private network provider for one VM (what TSI gives under libkrun): outbound
 * connectivity through the host's stack and published ports. One passt per VM, `-1` (one client,
 * exits with it), socket in a 1777 directory (passt drops to `nobody` before bind()).
 */
import type { PortSpec } from "../spec/types.ts";
import { spawnInNetns } from "./netns.ts";
import type { NetnsPath } from "../spec/netns_path.ts";
import { helperCommandOptions, isSocket, streamTail, watchHelper } from "../helper_process.ts";

/** How to start passt. */
export interface PasstOptions {
  /** Directory for the socket; made (mode 1777) if missing. */
  dir: string;
  /** Published ports: `-t`/`-u` forwards. */
  ports?: PortSpec[];
  /** Network namespace to run passt in. */
  netns?: NetnsPath;
  /** Disable passt's DHCP server (`--no-dhcp`). */
  noDhcp?: boolean;
  /** How long to wait for the socket (default 10 s). */
  timeoutMs?: number;
  /** passt binary (default `passt` from PATH). */
  binary?: string;
  /**
   * Called with passt's pid right after the spawn, before its socket is waited for: the caller
   * records it (lib/vm/run_state.ts) so passt is found and killed even if the caller dies before
   * anything connects to it (passt `-1` only exits when its one client disconnects).
   */
  onSpawn?: (pid: number) => Promise<void> | void;
}

/** A running passt. */
export interface PasstHandle {
  /** The UNIX stream socket QEMU connects to. */
  readonly socket: string;
  readonly pid: number;
  /** Resolves with passt's exit status when it ends. */
  readonly exited: Promise<Deno.CommandStatus>;
  /** Last lines passt wrote to stderr. */
  stderrTail(): string;
  /** Stops passt and removes its socket (idempotent). */
  stop(): Promise<void>;
}

/** Thrown when passt cannot serve (no default route in its netns, bad port, missing binary). */
export class PasstError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "PasstError";
  }
}

/** passt's `-t`/`-u` spec for one published port: `[hostIp/]hostPort:guestPort`. */
export function passtPortSpec(p: PortSpec): string {
  for (const [name, v] of [["hostPort", p.hostPort], ["guestPort", p.guestPort]] as const) {
    if (!Number.isInteger(v) || v < 1 || v > 65535) {
      throw new PasstError(`published port ${name}=${v}: expected an integer 1-65535`);
    }
  }
  if (p.hostIp !== undefined && !/^[0-9a-fA-F.:]+$/.test(p.hostIp)) {
    throw new PasstError(
      `published port hostIp=${JSON.stringify(p.hostIp)}: expected an IP address`,
    );
  }
  return `${p.hostIp !== undefined ? `${p.hostIp}/` : ""}${p.hostPort}:${p.guestPort}`;
}

/** passt's argv (after the binary) for a socket path and options. */
export function passtArgs(socket: string, opts: Pick<PasstOptions, "ports" | "noDhcp">): string[] {
  const args = ["-f", "-q", "-4", "-1", "-s", socket];
  if (opts.noDhcp) args.push("--no-dhcp");
  for (const p of opts.ports ?? []) args.push(p.protocol === "udp" ? "-u" : "-t", passtPortSpec(p));
  return args;
}

/** passt drops to `nobody` before bind(): every ancestor of its socket dir must be searchable. */
async function checkTraversable(dir: string): Promise<void> {
  const parts = dir.split("/").filter((p) => p !== "");
  for (let i = 1; i < parts.length; i++) {
    const p = "/" + parts.slice(0, i).join("/");
    const st = await Deno.stat(p);
    if (((st.mode ?? 0) & 0o001) === 0) {
      throw new PasstError(
        `passt socket dir ${dir}: ${p} is not searchable by others (mode ` +
          `${
            ((st.mode ?? 0) & 0o7777).toString(8)
          }); passt runs as nobody and could not bind there`,
      );
    }
  }
}

/** passt's stderr without blank lines and its noisy "Failed to send" ones. */
function passtTail(stream: ReadableStream<Uint8Array>): () => string {
  const raw = streamTail(stream, 8192);
  return () =>
    raw().split("\n").filter((l) => l.trim() !== "" && !l.startsWith("Failed to send")).join("\n");
}

/**
 * Starts passt and waits until its socket exists. Fails with PasstError (and leaves nothing
 * behind) when passt exits first, e.g. "No external routable interface" in a netns without a
 * default route.
 */
export async function startPasst(opts: PasstOptions): Promise<PasstHandle> {
  await Deno.mkdir(opts.dir, { recursive: true });
  await Deno.chmod(opts.dir, 0o1777);
  await checkTraversable(opts.dir);
  const socket = `${opts.dir}/passt.sock`;
  await Deno.remove(socket).catch(() => {});
  const args = passtArgs(socket, opts);
  const binary = opts.binary ?? "passt";
  const cmdOpts = helperCommandOptions(args);
  let child: Deno.ChildProcess;
  try {
    child = opts.netns
      ? spawnInNetns(opts.netns, binary, cmdOpts)
      : new Deno.Command(binary, cmdOpts).spawn();
  } catch (err) {
    const msg = (err as Error).message;
    if (/netns/.test(msg)) throw new PasstError(`cannot start ${binary}: ${msg}`);
    throw new PasstError(`cannot run ${binary} (apt-get install passt): ${msg}`);
  }
  const tail = passtTail(child.stderr);
  const watch = watchHelper(child, 2000);
  const exited = watch.exited;
  const stop = async () => {
    await watch.stop();
    await Deno.remove(socket).catch(() => {});
  };
  try {
    await opts.onSpawn?.(child.pid);
  } catch (err) {
    await stop();
    throw err;
  }
  const deadline = Date.now() + (opts.timeoutMs ?? 10_000);
  while (!(await isSocket(socket))) {
    const done = watch.done();
    if (done || Date.now() > deadline) {
      await stop();
      const status = await exited;
      const where = opts.netns ? `netns ${opts.netns}` : "the host netns";
      const msg = tail();
      const hint = /routable interface/i.test(msg)
        ? ` (passt needs an interface with a default route in ${where}; add one, or attach a network with --net)`
        : "";
      throw new PasstError(
        `passt ${args.join(" ")} ${
          done ? `exited with ${status.code}` : "did not create its socket in time"
        }${hint}: ${msg || "(no output)"}`,
      );
    }
    await new Promise((r) => setTimeout(r, 5));
  }
  return { socket, pid: child.pid, exited, stderrTail: tail, stop };
}
