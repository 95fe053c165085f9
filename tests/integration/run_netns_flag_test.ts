import { equal, match } from "node:assert/strict";
import { nerdbox, runArgv } from "../helpers/nerdbox_cli.ts";

const ROOTFS = await Deno.makeTempDir({ prefix: "nerdbox-run-netns-" });
addEventListener("unload", () => Deno.removeSync(ROOTFS, { recursive: true }));

Deno.test("--netns naming a regular file is refused before anything starts", async () => {
  const r = await nerdbox(
    runArgv(ROOTFS, ["true"], { backend: "qemu", flags: ["--netns", "/etc/passwd"] }),
  );
  equal(r.code, 125);
  match(r.stderr, /--netns "\/etc\/passwd": is not a namespace file/);
});

Deno.test("--netns with a relative path is refused", async () => {
  const r = await nerdbox(["run", "--backend", "qemu", "--netns", "ns1", ROOTFS, "--", "true"]);
  equal(r.code, 125);
  match(r.stderr, /--netns: "ns1": expected an absolute path/);
});

Deno.test("a signal while the VM starts ends the run with 128+n and no state left", async () => {
  const name = `sigtest-${crypto.randomUUID().slice(0, 8)}`;
  const child = new Deno.Command(new URL("../../bin/nerdbox", import.meta.url).pathname, {
    args: ["run", "--backend", "qemu", "--name", name, ROOTFS, "--", "/bin/sleep", "30"],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  // Deliver SIGTERM as soon as the run has made its state directory (the VM is starting).
  for (let i = 0; i < 200; i++) {
    if ((await listState(name)).length > 0) break;
    await new Promise((r) => setTimeout(r, 25));
  }
  child.kill("SIGTERM");
  const out = await child.output();
  equal(out.code, 143, new TextDecoder().decode(out.stderr));
  const after = await listState(name);
  equal(after.length, 0, `state left behind: ${after.join(", ")}`);
});

async function listState(name: string): Promise<string[]> {
  const names: string[] = [];
  try {
    for await (const e of Deno.readDir("/run/nerdbox")) {
      if (e.name.startsWith(`${name}-`)) names.push(e.name);
    }
  } catch {
    // no state root yet
  }
  return names;
}
