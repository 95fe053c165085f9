/**
 * `nerdbox run --backend qemu` (real QEMU/TCG guests): `-t` gives the workload its pty as
 * controlling terminal (session leader, tty_nr ≠ 0, `sh -i` has job control), and a SIGTERM that
 * reaches `nerdbox run` while the guest still boots ends the VM at once with 143, before the
 * workload ever ran, leaving nothing behind.
 */
import { doesNotMatch, equal, ok } from "node:assert/strict";
import { NERDBOX, runArgv } from "../helpers/nerdbox_cli.ts";
import { nerdboxProcesses, withScopedRun } from "../helpers/host_snapshot.ts";
import { assertSessionLeader, underScript } from "../helpers/tty.ts";

/** A rootfs and a unique id; afterwards nothing of the id may remain on the host. */
function withRun(fn: (rootfs: string, id: string) => Promise<void>): Promise<void> {
  return withScopedRun("nbx-ttykill", fn);
}

Deno.test("run -t: the workload leads a session with the pty as its controlling tty", async () => {
  await withRun(async (rootfs, id) => {
    // script(1) gives nerdbox run a terminal of its own, as a person's shell would.
    const cmd = `${NERDBOX} run -i -t --name ${id} --backend qemu --accel tcg ${rootfs} -- ` +
      `/bin/sh -ic 'set -- $(cat /proc/$$/stat); echo S$6:P$$:T$7:E; exit 6'`;
    const o = await underScript(cmd);
    const out = o.out;
    equal(o.code, 6, out);
    assertSessionLeader(out);
  });
});

Deno.test("run: SIGTERM while the guest boots ends the VM at once with 143", async () => {
  await withRun(async (rootfs, id) => {
    const child = new Deno.Command(NERDBOX, {
      args: runArgv(rootfs, ["/bin/echo", "began"], { name: id, backend: "qemu", accel: "tcg" }),
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const output = child.output();
    // Wait for the VMM to exist (the guest is then booting), then signal nerdbox run.
    const deadline = Date.now() + 60_000;
    while (!(await nerdboxProcesses()).some((l) => l.includes(id) && /qemu-system/.test(l))) {
      ok(Date.now() < deadline, "no QEMU process appeared");
      await new Promise((r) => setTimeout(r, 50));
    }
    child.kill("SIGTERM");
    const t0 = Date.now();
    const o = await output;
    console.log(`SIGTERM during boot → nerdbox run exited after ${Date.now() - t0} ms`);
    const stdout = new TextDecoder().decode(o.stdout);
    equal(o.code, 143, new TextDecoder().decode(o.stderr));
    equal(stdout.includes("began"), false, "the workload never ran");
    doesNotMatch(new TextDecoder().decode(o.stderr), /error|failed/i);
  });
});
