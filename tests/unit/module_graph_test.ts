import { ok as assert } from "node:assert/strict";

/** Modules the compiled binary must contain (guest/ is added by `--include`, scripts/compile.ts). */
const REQUIRED = [
  "lib/vm/libkrun.ts",
  "ffi/libkrun.ts",
  "lib/vm/qemu.ts",
  "lib/vm/qemu_argv.ts",
  "lib/net/passt.ts",
  "lib/shim/daemon.ts",
  "lib/shim/manager.ts",
];

Deno.test("deno info main.ts (the graph deno compile bundles) lists every backend", async () => {
  const root = new URL("../../", import.meta.url).pathname;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json", "main.ts"],
    cwd: root,
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert(out.success, new TextDecoder().decode(out.stderr));
  const graph = JSON.parse(new TextDecoder().decode(out.stdout)) as {
    modules: { specifier: string }[];
  };
  const files = new Set(
    graph.modules.map((m) => m.specifier).filter((s) => s.startsWith("file://")).map((s) =>
      new URL(s).pathname.slice(root.length)
    ),
  );
  const missing = REQUIRED.filter((f) => !files.has(f));
  assert(missing.length === 0, `missing from the module graph: ${missing.join(", ")}`);
});
