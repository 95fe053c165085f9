import { equal as assertEquals, match as assertMatch } from "node:assert/strict";
import { dispatch, usage } from "../../main.ts";

Deno.test("usage names every subcommand", () => {
  for (const name of ["run", "inspect", "shim", "demo"]) {
    assertMatch(usage(), new RegExp(`\\n  ${name} `));
  }
});

Deno.test("unknown command exits 2", async () => {
  assertEquals(await dispatch(["frobnicate"], "nerdbox"), 2);
});

Deno.test("started under the shim's name (argv[0]) the program is the shim", async () => {
  const main = new URL("../../main.ts", import.meta.url).pathname;
  const out = await new Deno.Command("bash", {
    args: ["-c", 'exec -a containerd-shim-nerdbox-v1 "$0" run -A "$1" -v', Deno.execPath(), main],
    env: { NERDBOX_INVOKED_AS: "" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  assertEquals(out.code, 0, new TextDecoder().decode(out.stderr));
  assertMatch(new TextDecoder().decode(out.stdout), /^containerd-shim-nerdbox-v1:\n {2}Version:/);
});
