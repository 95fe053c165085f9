/** Two VM networks may share neither a MAC nor a provider socket. */
import type { NetworkSpec, SpecError } from "./types.ts";

/**
 * One error per network whose MAC or socket an earlier network already uses. `nameOf` names a
 * network by its index (an annotation key, or `--net #i`).
 */
export function checkUniqueNetworks(
  networks: NetworkSpec[],
  nameOf: (index: number) => string,
): SpecError[] {
  const errors: SpecError[] = [];
  const macs = new Map<string, number>();
  const sockets = new Map<string, number>();
  for (const n of networks) {
    const m = macs.get(n.mac);
    if (m !== undefined) {
      errors.push({
        annotation: nameOf(n.index),
        field: "mac",
        value: n.mac,
        message: `the same mac as ${nameOf(m)}: expected every network to have its own MAC`,
      });
    } else macs.set(n.mac, n.index);
    const s = sockets.get(n.socket);
    if (s !== undefined) {
      errors.push({
        annotation: nameOf(n.index),
        field: "socket",
        value: n.socket,
        message: `the same socket as ${nameOf(s)}: expected every network to have its own ` +
          `provider socket`,
      });
    } else sockets.set(n.socket, n.index);
  }
  return errors;
}
