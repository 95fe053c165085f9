/**
 * The default backend a container gets when its annotations name none: runtime options
 * (runtimeoptions.v1.Options.config_path → a TOML or JSON file), then NERDBOX_BACKEND, then auto.
 */
import { equal, throws } from "node:assert/strict";
import { create, toBinary } from "@bufbuild/protobuf";
import { AnySchema } from "@bufbuild/protobuf/wkt";
import { OptionsSchema } from "../../lib/shim/proto/gen/runtimeoptions/options_pb.ts";
import { defaultBackend, parseOptionsFile } from "../../lib/shim/new_container.ts";
import { SpecValidationError } from "../../lib/spec/types.ts";

function optionsAny(configPath: string): Uint8Array {
  const value = toBinary(OptionsSchema, create(OptionsSchema, { configPath }));
  return toBinary(AnySchema, create(AnySchema, { typeUrl: "runtimeoptions.v1.Options", value }));
}

Deno.test("options files: TOML line or JSON; a bad backend names the file and value", () => {
  equal(parseOptionsFile('# nerdbox\nbackend = "qemu"\n', "/etc/x.toml").backend, "qemu");
  equal(parseOptionsFile('{"backend": "libkrun"}', "/etc/x.json").backend, "libkrun");
  equal(parseOptionsFile("other = 1\n", "/etc/x.toml").backend, undefined);
  throws(() => parseOptionsFile('backend = "kvm"', "/etc/x.toml"), (e) => {
    equal(e instanceof SpecValidationError, true);
    equal(
      (e as Error).message.startsWith(
        '/etc/x.toml: backend: "kvm": expected one of auto, libkrun, qemu',
      ),
      true,
      (e as Error).message,
    );
    return true;
  });
});

Deno.test("defaultBackend: runtime options file, then NERDBOX_BACKEND, then auto", async () => {
  const dir = await Deno.makeTempDir({ prefix: "nerdbox-shim-opts-" });
  const saved = Deno.env.get("NERDBOX_BACKEND");
  try {
    await Deno.writeTextFile(`${dir}/shim.toml`, 'backend = "qemu"\n');
    Deno.env.delete("NERDBOX_BACKEND");
    equal(await defaultBackend(optionsAny(`${dir}/shim.toml`)), "qemu");
    equal(await defaultBackend(undefined), "auto");
    await Deno.writeTextFile(`${dir}/bad.json`, "{oops");
    await defaultBackend(optionsAny(`${dir}/bad.json`)).then(
      () => {
        throw new Error("expected a rejection");
      },
      (e) => equal(e.message.startsWith(`runtime options file ${dir}/bad.json: `), true, e.message),
    );
    Deno.env.set("NERDBOX_BACKEND", "libkrun");
    equal(await defaultBackend(new Uint8Array()), "libkrun");
    Deno.env.set("NERDBOX_BACKEND", "vmware");
    await defaultBackend(undefined).then(
      () => {
        throw new Error("expected a rejection");
      },
      (e) => equal(/NERDBOX_BACKEND: "vmware"/.test(e.message), true, e.message),
    );
  } finally {
    if (saved === undefined) Deno.env.delete("NERDBOX_BACKEND");
    else Deno.env.set("NERDBOX_BACKEND", saved);
    await Deno.remove(dir, { recursive: true });
  }
});
