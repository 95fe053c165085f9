/**
 * `nerdbox inspect --probe`: is a provider's socket there, alive, and of the type `mode` says —
 * found out without taking the connection a single-client provider (passt -1, libgvproxy) keeps
 * for the VM. A connect() whose socket type differs from the listener's fails with EPROTOTYPE
 * before anything is queued, so a stream listener is recognised by a datagram and a seqpacket
 * connect that both fail that way; a datagram socket accepts a datagram connect, which sends nothing.
 * The path itself is looked at with lstat, as `nerdbox run` does: a symlink is refused as one.
 */
import type { NetMode } from "../spec/types.ts";
import {
  connectOnce,
  Errno,
  SOCK_DGRAM,
  SOCK_NONBLOCK,
  SOCK_SEQPACKET,
} from "../../ffi/sockets.ts";

/** What a probe found. */
export type ProbeStatus =
  | "ok"
  | "missing"
  | "not-a-socket"
  | "not-listening"
  | "wrong-type"
  | "error";

/** The socket type found behind a path. */
export type SocketKind = "stream" | "dgram" | "seqpacket";

/** The outcome of probing one socket. */
export interface ProbeResult {
  path: string;
  mode: NetMode;
  ok: boolean;
  status: ProbeStatus;
  /** The type found, when a socket answered. */
  socketType?: SocketKind;
  /** For a stream socket: listening (true), bound only (false), unknown (absent: other netns). */
  listening?: boolean;
  /** One sentence for people. */
  message: string;
}

const KIND_TEXT: Record<SocketKind, string> = {
  stream: "a stream socket",
  dgram: "a datagram socket",
  seqpacket: "a seqpacket socket",
};

/** Probes `path` for a provider serving `mode`, without connecting in a way that uses it up. */
export function probeSocket(path: string, mode: NetMode): Promise<ProbeResult> {
  return Promise.resolve(probeSync(path, mode));
}

function probeSync(path: string, mode: NetMode): ProbeResult {
  const result = (status: ProbeStatus, message: string, extra: Partial<ProbeResult> = {}) => ({
    path,
    mode,
    ok: status === "ok",
    status,
    ...extra,
    message,
  });
  // lstat, as `nerdbox run` checks it: a symlink is refused, not followed to a socket elsewhere.
  let info: Deno.FileInfo;
  try {
    info = Deno.lstatSync(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound || e instanceof Deno.errors.NotADirectory) {
      return result("missing", "no such file: is the provider running, and is the path right?");
    }
    return result("error", `cannot stat it: ${(e as Error).message}`);
  }
  if (info.isSymlink) {
    return result(
      "not-a-socket",
      `it is a symlink${linkTarget(path)}, not a UNIX socket: give the socket itself`,
    );
  }
  if (!info.isSocket) {
    const what = info.isFile ? "a regular file" : info.isDirectory ? "a directory" : "not a socket";
    return result("not-a-socket", `it is ${what}, not a UNIX socket`);
  }
  let kind: SocketKind;
  try {
    const r = connectOnce(path, SOCK_DGRAM | SOCK_NONBLOCK);
    if (r === 0) kind = "dgram";
    else if (r === Errno.EPROTOTYPE) {
      const s = connectOnce(path, SOCK_SEQPACKET | SOCK_NONBLOCK);
      kind = s === Errno.EPROTOTYPE ? "stream" : "seqpacket";
    } else if (r === Errno.ECONNREFUSED) {
      return result(
        "not-listening",
        "nobody is bound to it (a socket file left behind by a provider that exited?)",
      );
    } else if (r === Errno.ENOENT) {
      return result("missing", "it disappeared while being probed");
    } else if (r === Errno.EACCES) {
      return result("error", "permission denied: cannot connect to it");
    } else {
      return result("error", `connect() failed with errno ${r}`);
    }
  } catch (e) {
    return result("error", (e as Error).message);
  }
  const listening = kind === "stream" ? listeningState(path) : undefined;
  const extra: Partial<ProbeResult> = {
    socketType: kind,
    ...(listening === undefined ? {} : { listening }),
  };
  const want: SocketKind = mode === "unixgram" ? "dgram" : "stream";
  if (kind !== want) {
    const advice = kind === "stream"
      ? "use mode=unixstream"
      : kind === "dgram"
      ? "use mode=unixgram"
      : "neither mode fits (providers must use SOCK_STREAM or SOCK_DGRAM)";
    return result("wrong-type", `it is ${KIND_TEXT[kind]}: ${advice}`, extra);
  }
  if (kind === "stream" && listening === false) {
    return result("not-listening", "a stream socket is bound there but not listening", extra);
  }
  const state = kind === "dgram"
    ? "is bound there"
    : listening
    ? "is listening there"
    : "is bound there (its listening state is not visible from this network namespace)";
  return result("ok", `${KIND_TEXT[kind]} ${state}`, extra);
}

/** ` (to "TARGET")` for a symlink, or "" when it cannot be read. */
function linkTarget(path: string): string {
  try {
    return ` (to ${JSON.stringify(Deno.readLinkSync(path))})`;
  } catch {
    return "";
  }
}

/** __SO_ACCEPTCON in /proc/net/unix Flags: the socket is listening. */
const SO_ACCEPTCON = 0x10000;

/**
 * Whether the unconnected stream socket bound to `path` listens, from /proc/net/unix; undefined
 * when this network namespace does not list it.
 */
function listeningState(path: string): boolean | undefined {
  let text: string;
  try {
    text = Deno.readTextFileSync("/proc/net/unix");
  } catch {
    return undefined;
  }
  let seen: boolean | undefined;
  for (const line of text.split("\n").slice(1)) {
    // Num RefCount Protocol Flags Type St Inode Path
    const cols = line.trim().split(/\s+/);
    if (cols.length < 8 || cols.slice(7).join(" ") !== path) continue;
    const flags = parseInt(cols[3], 16);
    const type = parseInt(cols[4], 16);
    const state = parseInt(cols[5], 16);
    if (type !== 1 || state !== 1) continue;
    if (flags & SO_ACCEPTCON) return true;
    seen = false;
  }
  return seen;
}
