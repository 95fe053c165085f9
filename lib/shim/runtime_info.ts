/**
 * `containerd-shim-nerdbox-v1 -info`: the RuntimeInfo protobuf containerd asks a shim for
 * (`ctr plugins inspect-runtime`; containerd ≥ 2.2 on every task create, to learn which mount types
 * the shim takes into the VM itself). stdin carries the runtime options as a marshalled Any (or
 * nothing); they are echoed back as `options`, the way containerd's own shims do.
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { type Any, AnySchema } from "@bufbuild/protobuf/wkt";
import { type RuntimeInfo, RuntimeInfoSchema } from "./proto/gen/containerd/introspection_pb.ts";
import { ANNOTATION_PREFIX } from "../spec/annotations.ts";
import { VM_MOUNT_TYPES } from "./mounts.ts";
import { VERSION } from "../version.ts";

/** The runtime name reported in RuntimeInfo.name. */
export const RUNTIME_NAME = "io.containerd.nerdbox.v1";

/** containerd's annotation key listing the mount types a shim handles itself (comma-separated). */
export const ALLOW_MOUNTS_ANNOTATION = "containerd.io/runtime-allow-mounts";

/** type_url containerd registers for the OCI runtime features document (value = its JSON). */
export const FEATURES_TYPE_URL =
  "types.containerd.io/opencontainers/runtime-spec/1/features/Features";

/** The OCI runtime features document (runtime-spec features.md) describing what nerdbox honours. */
export function ociFeatures(): Record<string, unknown> {
  return {
    ociVersionMin: "1.0.0",
    ociVersionMax: "1.2.1",
    hooks: [],
    mountOptions: ["ro", "rw", "bind", "rbind", "nosuid", "nodev", "noexec"],
    linux: {
      namespaces: ["pid", "ipc", "uts", "mount", "network"],
      capabilities: [],
      cgroup: { v1: false, v2: false, systemd: false, systemdUser: false },
      seccomp: { enabled: false },
      apparmor: { enabled: false },
      selinux: { enabled: false },
    },
    annotations: {
      "io.containerd.nerdbox.version": VERSION,
      "io.containerd.nerdbox.annotation-prefix": ANNOTATION_PREFIX,
    },
  };
}

/** Builds the RuntimeInfo message; `options` is the Any containerd sent on stdin, if any. */
export function runtimeInfo(options?: Any): RuntimeInfo {
  const annotations: Record<string, string> = {};
  if (VM_MOUNT_TYPES.length > 0) annotations[ALLOW_MOUNTS_ANNOTATION] = VM_MOUNT_TYPES.join(",");
  return create(RuntimeInfoSchema, {
    name: RUNTIME_NAME,
    version: { version: VERSION, revision: "" },
    options,
    features: create(AnySchema, {
      typeUrl: FEATURES_TYPE_URL,
      value: new TextEncoder().encode(JSON.stringify(ociFeatures())),
    }),
    annotations,
  });
}

/**
 * Decodes the runtime options from `-info`'s stdin (a marshalled Any; empty = none). Throws an
 * error naming the input when the bytes are not an Any.
 */
export function parseInfoOptions(bytes: Uint8Array): Any | undefined {
  if (bytes.length === 0) return undefined;
  let any: Any;
  try {
    any = fromBinary(AnySchema, bytes);
  } catch (err) {
    throw new Error(
      `-info: stdin (${bytes.length} bytes) is not a marshalled google.protobuf.Any of runtime ` +
        `options: ${err instanceof Error ? err.message : err}`,
    );
  }
  return any.typeUrl === "" && any.value.length === 0 ? undefined : any;
}

/** Encodes RuntimeInfo for stdout. */
export function encodeRuntimeInfo(info: RuntimeInfo): Uint8Array {
  return toBinary(RuntimeInfoSchema, info);
}
