/** virtio-net feature bits a nerdbox network may ask for, by name, and the virtio rules between them. */
import { FieldError } from "./field_error.ts";
import { didYouMean } from "./suggest.ts";

/** Feature name → bit value (libkrun's NET_FEATURE_*; virtio spec 5.1.3 bit numbers). */
export const FEATURES = {
  VIRTIO_NET_F_CSUM: 1 << 0,
  VIRTIO_NET_F_GUEST_CSUM: 1 << 1,
  VIRTIO_NET_F_GUEST_TSO4: 1 << 7,
  VIRTIO_NET_F_GUEST_TSO6: 1 << 8,
  VIRTIO_NET_F_GUEST_UFO: 1 << 10,
  VIRTIO_NET_F_HOST_TSO4: 1 << 11,
  VIRTIO_NET_F_HOST_TSO6: 1 << 12,
  VIRTIO_NET_F_HOST_UFO: 1 << 14,
} as const;

/** A feature name. */
export type FeatureName = keyof typeof FEATURES;

/** Every feature name, in bit order. */
export const FEATURE_NAMES = Object.keys(FEATURES) as FeatureName[];

/** libkrun's COMPAT_NET_FEATURES: CSUM|GUEST_CSUM|GUEST_TSO4|GUEST_UFO|HOST_TSO4|HOST_UFO. */
export const COMPAT_NET_FEATURES = 0x4c83;

/** Every bit libkrun accepts (its internal NET_ALL). */
export const ALL_NET_FEATURES = 0x5d83;

/** virtio spec 5.1.3.1: a feature → the feature it requires. */
export const FEATURE_REQUIRES: Readonly<Partial<Record<FeatureName, FeatureName>>> = {
  VIRTIO_NET_F_GUEST_TSO4: "VIRTIO_NET_F_GUEST_CSUM",
  VIRTIO_NET_F_GUEST_TSO6: "VIRTIO_NET_F_GUEST_CSUM",
  VIRTIO_NET_F_GUEST_UFO: "VIRTIO_NET_F_GUEST_CSUM",
  VIRTIO_NET_F_HOST_TSO4: "VIRTIO_NET_F_CSUM",
  VIRTIO_NET_F_HOST_TSO6: "VIRTIO_NET_F_CSUM",
  VIRTIO_NET_F_HOST_UFO: "VIRTIO_NET_F_CSUM",
};

/** Names of the bits set in `bits`, in bit order. */
export function featureNames(bits: number): FeatureName[] {
  return FEATURE_NAMES.filter((n) => (bits & FEATURES[n]) !== 0);
}

/** `|`-joined names, or "0" when none. */
export function formatFeatures(bits: number): string {
  return bits === 0 ? "0" : featureNames(bits).join("|");
}

/**
 * Parses `NAME|NAME…` into bits. Throws FieldError listing every unknown name (with the nearest
 * known one) and every combination the virtio spec forbids (naming the missing feature).
 */
export function parseFeatures(text: string): number {
  const problems: string[] = [];
  let bits = 0;
  for (const name of text.split("|")) {
    if (Object.hasOwn(FEATURES, name)) {
      bits |= FEATURES[name as FeatureName];
    } else if (name === "") {
      problems.push("empty feature name (stray '|')");
    } else {
      problems.push(`unknown feature "${name}"${didYouMean(name, FEATURE_NAMES)}`);
    }
  }
  if (problems.length > 0) {
    throw new FieldError(
      `${problems.join("; ")}: expected '|'-separated names from ${FEATURE_NAMES.join(", ")}`,
    );
  }
  const missing = missingDependencies(bits);
  if (missing.length > 0) throw new FieldError(missing.join("; "));
  return bits;
}

/** One message per feature in `bits` whose required feature (virtio spec 5.1.3.1) is absent. */
export function missingDependencies(bits: number): string[] {
  const out: string[] = [];
  for (const name of featureNames(bits)) {
    const need = FEATURE_REQUIRES[name];
    if (need && (bits & FEATURES[need]) === 0) {
      out.push(`${name} requires ${need} (virtio spec 5.1.3.1): add ${need}`);
    }
  }
  return out;
}
