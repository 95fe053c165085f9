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
