/**
 * Network namespaces on the host: named ones under /run/netns (made with `ip netns`), validation
 * of a caller's netns path, and running a synchronous step (a spawn) inside a namespace with the
 * safe FFI pattern: setns(target) → spawn → setns(original), with no `await` in between.
 */
import type { NetnsPath } from "../spec/netns_path.ts";
import {
  CLONE_NEWNET,
  closeFd,
  fsMagic,
  LibcError,
  NSFS_MAGIC,
  nsType,
  openNs,
  setnsNet,
} from "../../ffi/netns.ts";
import { exists } from "../fs.ts";

/** Where `ip netns` keeps named namespaces. */
export const NETNS_RUN_DIR = "/run/netns";

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;
const PROC_NS_RE = /^\/proc\/(?:[1-9][0-9]*|self|thread-self)\/(?:task\/[1-9][0-9]*\/)?ns\/net$/;

/** A netns path or name that cannot be used, with the reason. */
export class NetnsError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "NetnsError";
  }
}

/** Path of the named netns `name` (validated). */
export function netnsPathOf(name: string): string {
  if (!NAME_RE.test(name) || name === "." || name === "..") {
    throw new NetnsError(
      `netns name ${JSON.stringify(name)}: expected 1-63 characters [A-Za-z0-9_.-], ` +
        `starting with a letter or digit`,
    );
  }
  return `${NETNS_RUN_DIR}/${name}`;
}

async function ip(args: string[]): Promise<{ code: number; stderr: string }> {
  const out = await new Deno.Command("ip", {
    args,
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).output();
  return { code: out.code, stderr: new TextDecoder().decode(out.stderr).trim() };
}

/** Creates the named netns `name` with `ip netns add`; returns its path. Fails if it exists. */
export async function createNamedNetns(name: string): Promise<string> {
  const path = netnsPathOf(name);
  const r = await ip(["netns", "add", name]);
  if (r.code !== 0) throw new NetnsError(`ip netns add ${name}: ${r.stderr || `exit ${r.code}`}`);
  return path;
}

/** Deletes the named netns `name` with `ip netns del`; a missing one is not an error. */
export async function deleteNamedNetns(name: string): Promise<void> {
  const path = netnsPathOf(name);
  if (!(await exists(path, true))) return;
  const r = await ip(["netns", "del", name]);
  if (r.code !== 0 && (await exists(path, true))) {
    throw new NetnsError(`ip netns del ${name}: ${r.stderr || `exit ${r.code}`}`);
  }
}

/**
 * Opens `path` as a network namespace: absolute, normalised, not a symlink (except the
 * `/proc/<pid>/ns/net` magic links), on nsfs, of type CLONE_NEWNET. Returns the fd (O_CLOEXEC);
 * the checks run on the opened fd, so what was checked is what gets entered.
 */
function openNetns(path: string, what: string): number {
  const bad = (why: string) => new NetnsError(`${what} ${JSON.stringify(path)}: ${why}`);
  if (!path.startsWith("/")) throw bad("expected an absolute path");
  if (path.includes("\0")) throw bad("contains a NUL byte");
  if (path.split("/").some((c) => c === "." || c === "..") || /\/\/|\/$/.test(path)) {
    throw bad("expected a normalised path (no '.', '..', '//' or trailing '/')");
  }
  let fd: number;
  try {
    fd = openNs(path, PROC_NS_RE.test(path));
  } catch (e) {
    if (e instanceof LibcError) {
      if (e.errno === 2) throw bad("does not exist");
      if (e.errno === 40) throw bad("is a symlink; give the namespace file itself");
      throw bad(e.message);
    }
    throw e;
  }
  try {
    const magic = fsMagic(fd);
    if (magic !== NSFS_MAGIC) {
      throw bad(
        `is not a namespace file (filesystem magic 0x${magic.toString(16)}, expected nsfs ` +
          `0x${
            NSFS_MAGIC.toString(16)
          }; a bind-mounted netns like /run/netns/NAME or /proc/PID/ns/net)`,
      );
    }
    const type = nsType(fd);
    if (type !== CLONE_NEWNET) {
      throw bad(`is a namespace of another kind (type 0x${type.toString(16)}), not a network one`);
    }
  } catch (e) {
    closeFd(fd);
    throw e;
  }
  return fd;
}

/**
 * Checks that `path` names a network namespace (see openNetns for the rules); returns the path.
 * `what` names the source in errors (`--netns`, `config.json linux.namespaces[1].path`, …).
 */
export function validateNetnsPath(path: string, what = "netns"): NetnsPath {
  closeFd(openNetns(path, what));
  return path as NetnsPath;
}

function isThenable(v: unknown): boolean {
  return typeof v === "object" && v !== null &&
    typeof (v as { then?: unknown }).then === "function";
}

/**
 * Runs the synchronous `fn` with the calling thread inside the netns at `path` (checked as by
 * validateNetnsPath) and switches back before returning. `fn` must not be async: a Promise result is refused (after switching back).
 * If switching back fails the process exits (125): it must never go on in the wrong namespace.
 */
export function withNetns<T>(path: string, fn: () => T): T {
  const target = openNetns(path, "netns");
  let orig: number;
  try {
    orig = openNs("/proc/thread-self/ns/net", true);
  } catch (e) {
    closeFd(target);
    throw e;
  }
  let result: T;
  try {
    try {
      setnsNet(target);
    } catch (e) {
      throw new NetnsError(`cannot enter netns ${JSON.stringify(path)}: ${(e as Error).message}`);
    }
    try {
      result = fn();
    } finally {
      try {
        setnsNet(orig);
      } catch (e) {
        console.error(`nerdbox: fatal: cannot return to the original netns: ${e}`);
        Deno.exit(125);
      }
    }
  } finally {
    closeFd(target);
    closeFd(orig);
  }
  if (isThenable(result)) {
    throw new TypeError("withNetns: fn must be synchronous (it returned a Promise)");
  }
  return result;
}

/** Spawns `cmd` with `options` inside the netns at `path` (the child stays there). */
export function spawnInNetns(
  path: string,
  cmd: string | URL,
  options: Deno.CommandOptions,
): Deno.ChildProcess {
  return withNetns(path, () => new Deno.Command(cmd, options).spawn());
}
