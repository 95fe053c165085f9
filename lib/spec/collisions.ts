/** Uniqueness across annotations: two VM networks may share neither a MAC nor a provider socket. */
import type { NetworkSpec, SpecError } from "./types.ts";

/** What a field of one annotation clashes with: the first annotation that had the same value. */
export interface UniqueField<V> {
  /** Values seen so far, with the index that had each first. */
  seen: Map<V, number>;
  field: string;
  /** Names an annotation by its index. */
  nameOf: (index: number) => string;
  /** What was expected, e.g. "a MAC of its own". */
  expected: string;
}

/**
 * Claims `value` for annotation `index`: undefined when no earlier one had it, else the error
 * naming both (the value stays the earlier one's).
 */
export function claimUnique<V extends string>(
  u: UniqueField<V>,
  index: number,
  value: V,
): SpecError | undefined {
  const other = u.seen.get(value);
  if (other === undefined) {
    u.seen.set(value, index);
    return undefined;
  }
  return {
    annotation: u.nameOf(index),
    field: u.field,
    value,
    message: `the same ${u.field} as ${u.nameOf(other)}: expected ${u.expected}`,
  };
}

/**
 * One error per network whose MAC or socket an earlier network already uses. `nameOf` names a
 * network by its index (an annotation key, or `--net #i`).
 */
export function checkUniqueNetworks(
  networks: NetworkSpec[],
  nameOf: (index: number) => string,
): SpecError[] {
  const macs = {
    seen: new Map(),
    field: "mac",
    nameOf,
    expected: "every network to have its own MAC",
  };
  const sockets = {
    seen: new Map(),
    field: "socket",
    nameOf,
    expected: "every network to have its own provider socket",
  };
  return networks.flatMap((n) =>
    [claimUnique(macs, n.index, n.mac), claimUnique(sockets, n.index, n.socket)]
      .filter((e): e is SpecError => e !== undefined)
  );
}
