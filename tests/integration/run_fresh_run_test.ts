/**
 * The first `nerdbox run` after a reboot: /run is a fresh tmpfs, so nerdbox creates /run/nerdbox
 * itself. It must create it 0711 (lib/vm/run_state.ts ensureStateRoot): the private passt of a
 * QEMU run runs as nobody and must traverse it to its socket. Reproduced in a private mount
 * namespace (`unshare -m`) with a fresh tmpfs on /run, with a real `nerdbox run --backend qemu`.
 */
import assert from "node:assert/strict";
import { makeBusyboxRootfs } from "../helpers/rootfs.ts";
import { NERDBOX } from "../helpers/nerdbox_cli.ts";

// Fixed script; the paths arrive as "$1" and "$2", never spliced into it.
const SCRIPT = [
  "set -e",
  "mount -t tmpfs -o mode=755 tmpfs /run",
  "if [ -e /run/nerdbox ]; then echo 'not a fresh /run'; exit 99; fi",
  'rc=0; "$1" run --backend qemu "$2" -- /bin/sh -c "echo fresh-run-ok" || rc=$?',
  'echo "mode=$(stat -c %a /run/nerdbox) rc=$rc"',
].join("\n");

Deno.test("fresh /run: the first nerdbox run --backend qemu creates /run/nerdbox 0711 and works", async () => {
  const rootfs = await makeBusyboxRootfs();
  try {
    const out = await new Deno.Command("unshare", {
      args: [
        "-m",
        "--propagation",
        "private",
        "--",
        "/bin/sh",
        "-c",
        SCRIPT,
        "sh",
        NERDBOX,
        rootfs,
      ],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stdout = new TextDecoder().decode(out.stdout);
    const stderr = new TextDecoder().decode(out.stderr);
    assert.equal(out.code, 0, stderr);
    assert.match(stdout, /^fresh-run-ok$/m, stderr);
    assert.match(stdout, /^mode=711 rc=0$/m, `${stdout}\n${stderr}`);
  } finally {
    await Deno.remove(rootfs, { recursive: true });
  }
});
