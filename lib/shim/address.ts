/**
 * Where a shim daemon listens: like the runc shim, `/run/containerd/s/<sha256hex(address/ns/group)>`,
 * where the group is the pod (`io.kubernetes.cri.sandbox-id`) or, without one, the namespace, so that
 * one daemon serves many containers.
 */

/** Directory of shim sockets (the runc shim hard-codes the same). */
export const SOCKET_DIR = "/run/containerd/s";
/** Annotation that groups the containers of one pod into one daemon. */
export const SANDBOX_ANNOTATION = "io.kubernetes.cri.sandbox-id";
/** Annotation that names a group explicitly (as `io.containerd.runc.v2.group` does for runc). */
export const GROUP_ANNOTATION = "io.containerd.nerdbox.group";

/** The daemon group a container belongs to, from its annotations. */
export function groupOf(annotations: Record<string, string>): string {
  return annotations[GROUP_ANNOTATION] || annotations[SANDBOX_ANNOTATION] || "nerdbox";
}

/** Socket path for (containerd address, namespace, group); always ≤ SUN_PATH_MAX (lib/spec/socket_path.ts) bytes. */
export async function socketPath(
  address: string,
  namespace: string,
  group: string,
): Promise<string> {
  const data = new TextEncoder().encode(`${address}/${namespace}/${group}`);
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", data));
  const hex = [...digest].map((b) => b.toString(16).padStart(2, "0")).join("");
  return `${SOCKET_DIR}/${hex}`;
}

/** Reads the annotations of `<bundle>/config.json`; a missing or unreadable file gives {}. */
export async function bundleAnnotations(bundle: string): Promise<Record<string, string>> {
  try {
    const cfg = JSON.parse(await Deno.readTextFile(`${bundle}/config.json`));
    const ann = cfg?.annotations;
    if (ann && typeof ann === "object") {
      return Object.fromEntries(
        Object.entries(ann).filter(([, v]) => typeof v === "string") as [string, string][],
      );
    }
  } catch { /* no config: the default group */ }
  return {};
}
