/**
 * Soak: many sequential `nerdbox run --backend qemu` runs (real TCG guests) leave nothing behind
 * and grow nothing: no process, state dir, socket or mount of any run remains, the image cache
 * gains no entry after the first run (the guest image is reused) and no temp entry, and the
 * runner's own fds are back where they were. Short in CI (3 runs); NERDBOX_SOAK=1 runs 25, and
 * NERDBOX_SOAK_RUNS=N any number.
 */
import { equal, ok } from "node:assert/strict";
import { nerdbox, runArgv } from "../helpers/nerdbox_cli.ts";
import { makeBusyboxRootfs } from "../helpers/rootfs.ts";
import { assertNothingLeft, takeHostSnapshot } from "../helpers/host_snapshot.ts";

const RUNS = Number(
  Deno.env.get("NERDBOX_SOAK_RUNS") ?? (Deno.env.get("NERDBOX_SOAK") === "1" ? 25 : 3),
);
const CACHE = Deno.env.get("NERDBOX_CACHE_DIR") ?? "/var/lib/nerdbox/cache";

async function cacheEntries(): Promise<string[]> {
  return (await Array.fromAsync(Deno.readDir(CACHE)).catch(() => [])).map((e) => e.name).sort();
}

async function openFds(): Promise<number> {
  return (await Array.fromAsync(Deno.readDir("/proc/self/fd"))).length;
}

Deno.test({
  name: `soak: ${RUNS} sequential nerdbox runs leave nothing behind and grow nothing`,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "nbx-soak-" });
    const tag = `nbx-soak-${crypto.randomUUID().slice(0, 6)}`;
    try {
      await makeBusyboxRootfs(`${dir}/rootfs`);
      const run = async (i: number) => {
        const r = await nerdbox(
          runArgv(`${dir}/rootfs`, ["/bin/sh", "-c", `echo run ${i}; exit ${i % 7}`], {
            name: `${tag}-${i}`,
            backend: "qemu",
            accel: "tcg",
          }),
        );
        equal(r.code, i % 7, r.stderr);
        equal(r.stdout, `run ${i}\n`);
      };
      await run(0); // warm-up: builds or reuses the guest image
      const cache0 = await cacheEntries();
      const fds0 = await openFds();
      const before = await takeHostSnapshot({ aspects: ["processes", "runFiles", "mounts"] });
      for (let i = 1; i <= RUNS; i++) await run(i);
      await assertNothingLeft(
        before,
        {
          aspects: ["processes", "runFiles", "mounts"],
          only: new RegExp(tag),
        },
        10_000,
        `left after ${RUNS} runs`,
      );
      const cache1 = await cacheEntries();
      equal(
        cache1.filter((e) => !cache0.includes(e)).join(","),
        "",
        "the image cache grew (a rebuild per run, or temp entries left)",
      );
      ok((await openFds()) <= fds0, "the test runner's fds grew");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
