/**
 * `containerd-shim-nerdbox-v1 -info` through the real launcher: the RuntimeInfo protobuf on stdout
 * decoded field by field, the runtime options read from stdin echoed back, and bad stdin refused.
 */
import { deepEqual, equal, match, ok } from "node:assert/strict";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { AnySchema } from "@bufbuild/protobuf/wkt";
import { RuntimeInfoSchema } from "../../lib/shim/proto/gen/containerd/introspection_pb.ts";
import { OptionsSchema } from "../../lib/shim/proto/gen/runtimeoptions/options_pb.ts";
import { parseShimFlags } from "../../lib/shim/flags.ts";
import { VM_MOUNT_TYPES } from "../../lib/shim/mounts.ts";
import { VERSION } from "../../lib/version.ts";

const SHIM = new URL("../../bin/containerd-shim-nerdbox-v1", import.meta.url).pathname;

async function info(stdin: Uint8Array) {
  const child = new Deno.Command(SHIM, {
    args: ["-info"],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const w = child.stdin.getWriter();
  await w.write(stdin);
  await w.close();
  const out = await child.output();
  return { code: out.code, stdout: out.stdout, stderr: new TextDecoder().decode(out.stderr) };
}

Deno.test("-info is a flag, not an action", () => {
  const f = parseShimFlags(["-info"]);
  equal(f.info, true);
  equal(f.action, "");
  equal(parseShimFlags(["--info=false"]).info, false);
});

Deno.test("-info with no options: name, version, OCI features JSON, mount-type annotation", async () => {
  const res = await info(new Uint8Array());
  equal(res.code, 0, res.stderr);
  const msg = fromBinary(RuntimeInfoSchema, res.stdout);
  equal(msg.name, "io.containerd.nerdbox.v1");
  equal(msg.version?.version, VERSION);
  equal(msg.options, undefined);
  equal(
    msg.features?.typeUrl,
    "types.containerd.io/opencontainers/runtime-spec/1/features/Features",
  );
  const features = JSON.parse(new TextDecoder().decode(msg.features!.value));
  equal(features.ociVersionMin, "1.0.0");
  ok(Array.isArray(features.linux.namespaces));
  equal(features.annotations["io.containerd.nerdbox.version"], VERSION);
  const allow = msg.annotations["containerd.io/runtime-allow-mounts"];
  if (VM_MOUNT_TYPES.length === 0) equal(allow, undefined);
  else deepEqual(allow.split(","), [...VM_MOUNT_TYPES]);
});

Deno.test("-info echoes the runtime options containerd sends on stdin", async () => {
  const opts = create(AnySchema, {
    typeUrl: "runtimeoptions.v1.Options",
    value: toBinary(OptionsSchema, create(OptionsSchema, { configPath: "/etc/nerdbox.toml" })),
  });
  const res = await info(toBinary(AnySchema, opts));
  equal(res.code, 0, res.stderr);
  const msg = fromBinary(RuntimeInfoSchema, res.stdout);
  equal(msg.options?.typeUrl, "runtimeoptions.v1.Options");
  equal(fromBinary(OptionsSchema, msg.options!.value).configPath, "/etc/nerdbox.toml");
});

Deno.test("-info refuses stdin that is not a protobuf Any, naming it", async () => {
  const res = await info(new Uint8Array([0xff, 0xff, 0xff]));
  equal(res.code, 1);
  equal(res.stdout.length, 0);
  match(res.stderr, /stdin \(3 bytes\) is not a marshalled google.protobuf.Any/);
});
