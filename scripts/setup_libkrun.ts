/**
 * Installs libkrun, libkrunfw and libgvproxy from the pinned npm package into /usr/local/lib, where
 * nerdbox looks for libkrun.so.1 without any flag.
 */
import { exists } from "../lib/fs.ts";

/** The npm package that ships the libkrun build nerdbox is developed and tested against. */
export const LIBKRUN_PACKAGE = "@boxlite-ai/boxlite-linux-x64-gnu@0.2.11";
/** Where setup installs the shared libraries. */
export const LIB_DIR = "/usr/local/lib";

const FILES: Array<[string, string[]]> = [
  ["libkrun.so.1.16.0", ["libkrun.so.1", "libkrun.so"]],
  ["libkrunfw.so.5", []],
  ["libgvproxy.so", []],
];

/** Installs the libraries unless every one is already in place. */
export async function installLibkrun(): Promise<void> {
  const present = await Promise.all(FILES.map(([f]) => exists(`${LIB_DIR}/${f}`)));
  if (present.every(Boolean)) return;
  const tmp = await Deno.makeTempDir({ prefix: "nerdbox-setup-" });
  try {
    const out = await new Deno.Command("npm", {
      args: ["install", "--silent", "--no-audit", "--no-fund", "--prefix", tmp, LIBKRUN_PACKAGE],
      stdin: "null",
    }).output();
    if (!out.success) {
      throw new Error(`setup: npm install ${LIBKRUN_PACKAGE} failed (exit ${out.code})`);
    }
    const runtime = `${tmp}/node_modules/@boxlite-ai/boxlite-linux-x64-gnu/runtime`;
    for (const [file, links] of FILES) {
      const dest = `${LIB_DIR}/${file}`;
      await Deno.copyFile(`${runtime}/${file}`, `${dest}.tmp`);
      await Deno.chmod(`${dest}.tmp`, 0o755);
      await Deno.rename(`${dest}.tmp`, dest);
      for (const link of links) {
        await Deno.remove(`${LIB_DIR}/${link}`).catch(() => {});
        await Deno.symlink(file, `${LIB_DIR}/${link}`);
      }
    }
    await new Deno.Command("ldconfig", { stdin: "null" }).output();
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
}
