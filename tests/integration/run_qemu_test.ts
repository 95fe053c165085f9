/**
 * `nerdbox run --backend qemu` end to end with a real guest under TCG: run hands the plan and
 * stdio to startVm, which routes to the QEMU backend. Checks exit status, stdout/stderr, stdin
 * with -i, and a signal sent to `nerdbox run` reaching the workload.
 */
import assert from "node:assert/strict";
import { makeBusyboxRootfs } from "../helpers/rootfs.ts";
import { NERDBOX, nerdbox, processesMatching, runArgv } from "../helpers/nerdbox_cli.ts";
import { RUN_STATE_ROOT } from "../../lib/cli/run.ts";
import { runCommandText } from "../helpers/procs.ts";

/** Runs fn with a busybox rootfs and a unique sandbox id; checks nothing is left behind. */
async function withRootfs(fn: (rootfs: string, id: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "nb-run-qemu-" });
  const id = `nb-run-qemu-${crypto.randomUUID().slice(0, 8)}`;
  try {
    await makeBusyboxRootfs(`${dir}/rootfs`);
    await fn(`${dir}/rootfs`, id);
  } finally {
    await Deno.remove(dir, { recursive: true });
    const left = [];
    for await (const e of Deno.readDir(RUN_STATE_ROOT)) {
      if (e.name.startsWith(`${id}-`)) left.push(e.name);
    }
    assert.deepEqual(left, [], "the state dir is removed");
    assert.deepEqual(await processesMatching(`${RUN_STATE_ROOT}/${id}-`), [], "no VMM left");
  }
}

Deno.test("run --backend qemu: the workload's stdout, stderr and exit status", () =>
  withRootfs(async (rootfs, id) => {
    const r = await nerdbox(
      runArgv(rootfs, ["/bin/sh", "-c", 'echo "$GREETING from $(pwd)"; echo oops >&2; exit 3'], {
        name: id,
        backend: "qemu",
        flags: ["-e", "GREETING=hello there", "-w", "/tmp"],
      }),
    );
    assert.equal(r.code, 3, r.stderr);
    assert.equal(r.stdout, "hello there from /tmp\n");
    assert.match(r.stderr, /^oops$/m);
  }));

Deno.test("run --backend qemu -i: stdin reaches the workload, EOF included", () =>
  withRootfs(async (rootfs, id) => {
    const out = await runCommandText(
      NERDBOX,
      runArgv(rootfs, ["/bin/sh", "-c", "tr a-z A-Z; echo done"], {
        name: id,
        backend: "qemu",
        flags: ["-i"],
      }),
      { stdin: new TextEncoder().encode("piped input\n") },
    );
    assert.equal(out.code, 0, out.stderr);
    assert.equal(out.stdout, "PIPED INPUT\ndone\n");
  }));

Deno.test("run --backend qemu: SIGTERM to nerdbox run is delivered to the workload", () =>
  withRootfs(async (rootfs, id) => {
    const child = new Deno.Command(NERDBOX, {
      args: runArgv(rootfs, [
        "/bin/sh",
        "-c",
        'trap "echo got TERM; exit 42" TERM; echo ready; while :; do sleep 0.2; done',
      ], { name: id, backend: "qemu" }),
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const reader = child.stdout.getReader();
    let seen = "";
    while (!seen.includes("ready\n")) {
      const { value, done } = await reader.read();
      if (done) break;
      seen += new TextDecoder().decode(value);
    }
    assert.match(seen, /ready/);
    child.kill("SIGTERM");
    while (true) {
      const { value, done } = await reader.read();
      if (done) break;
      seen += new TextDecoder().decode(value);
    }
    const status = await child.status;
    const stderr = new TextDecoder().decode(
      (await new Response(child.stderr).arrayBuffer()) as ArrayBuffer,
    );
    assert.equal(status.code, 42, stderr);
    assert.match(seen, /got TERM/);
  }));
