/**
 * The entry point shared by the report benches: run directly, they print their report for
 * `argv[0]` rounds; under `deno bench`, one untimed row runs them (rounds from `roundsEnv`) and the
 * report is printed when the process ends.
 */

/** Wires `report(rounds)` to `deno run` (main module) or `deno bench` as described above. */
export async function reportEntry(
  meta: ImportMeta,
  what: string,
  roundsEnv: string,
  report: (rounds: number) => Promise<string>,
): Promise<void> {
  if (meta.main) {
    console.log(await report(Number(Deno.args[0] ?? 3)));
    return;
  }
  if (typeof Deno.bench !== "function") return;
  let text: string | undefined;
  Deno.bench(
    { name: `${what} report printed below (this row times nothing)`, n: 1, warmup: 0 },
    async () => {
      text ??= await report(Number(Deno.env.get(roundsEnv) ?? 3));
    },
  );
  globalThis.addEventListener("unload", () => text && console.log(text));
}
