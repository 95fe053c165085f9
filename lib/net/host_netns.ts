/**
 * The one place that decides whether a network namespace is the host's own. nerdbox never
 * redirects, moves, addresses or otherwise changes interfaces, qdiscs or routes there: a
 * host-network pod gets a private network instead (docs/kubernetes.md "Host-network pods").
 *
 * Protected are PID 1's namespace (`/proc/1/ns/net`, when this process may read it: inside some
 * sandboxes even root may not) and the namespace nerdbox itself runs in (containerd starts the
 * shim in the node's namespace; a pod's namespace is always another one).
 */

/** Where the host's own network namespace is read from. */
export const HOST_NETNS_PATH = "/proc/1/ns/net";
/** The namespace this process runs in (its main thread; withNetns always switches back). */
export const OWN_NETNS_PATH = "/proc/thread-self/ns/net";

/** Refusal to change the host's own network namespace. */
export class HostNetnsError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "HostNetnsError";
  }
}

/** `dev:ino` of the namespace `path` names (following the /proc magic link), or undefined. */
export function netnsIdentity(path: string): string | undefined {
  try {
    const st = Deno.statSync(path);
    return `${st.dev}:${st.ino}`;
  } catch {
    return undefined;
  }
}

/**
 * True when `path` names the host's own network namespace: the same nsfs inode as PID 1's or as
 * nerdbox's own. A `path` that cannot be read is not. Synchronous on purpose: it runs on the main
 * thread, which is never inside another namespace between two statements of async code.
 */
export function isHostNetns(
  path: string,
  protectedPaths: readonly string[] = [HOST_NETNS_PATH, OWN_NETNS_PATH],
): boolean {
  const target = netnsIdentity(path);
  if (target === undefined) return false;
  const known = protectedPaths.map(netnsIdentity).filter((id) => id !== undefined);
  if (known.length === 0) {
    throw new HostNetnsError(
      `cannot read ${protectedPaths.join(" or ")} to tell whether ${JSON.stringify(path)} is ` +
        `the host's network namespace; nerdbox needs it before changing interfaces there`,
    );
  }
  return known.includes(target);
}

/**
 * Throws a HostNetnsError naming `what` (the change that was asked for) when `path` is the host's
 * own network namespace.
 */
export function refuseHostNetns(path: string, what: string): void {
  if (isHostNetns(path)) {
    throw new HostNetnsError(
      `${what}: netns ${JSON.stringify(path)} is the host's own network namespace (that of ` +
        `PID 1 or of nerdbox itself); nerdbox never changes the host's interfaces, qdiscs or ` +
        `routes. A host-network pod gets a private network instead (TSI under libkrun, passt ` +
        `under QEMU)`,
    );
  }
}
