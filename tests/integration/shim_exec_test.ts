/**
 * Exec through containerd: `ctr task exec` into a nerdbox container (real QEMU guest) via the shim —
 * output and status, a failing exit status and a missing binary, stdin, a tty (`-t`), `ctr task ps`,
 * signals to an exec'd process, exec events, and nothing left behind afterwards.
 */
import { equal, match, ok } from "node:assert/strict";
import { IMAGE, importBusyboxImage, RUNTIME, startContainerd } from "../helpers/containerd.ts";
import {
  assertNoLeftovers,
  ctrEvents,
  runDetached,
  tasks,
  waitFor,
  waitStopped,
} from "../helpers/shim_exec_env.ts";
import { underScript } from "../helpers/tty.ts";

const R = ["--runtime", RUNTIME];
const ID = "xc1";

Deno.test("ctr task exec runs extra processes in a nerdbox microVM", async (t) => {
  const ctd = await startContainerd("nerdbox-shim-exec");
  const events = ctrEvents(ctd);
  const eventsOut = events.text;
  const log = `/run/${ctd.name}/${ID}.log`;
  try {
    await importBusyboxImage(ctd);
    await runDetached(ctd, ID, "echo ready; exec sleep 1000");
    const exec = (args: string[]) => ctd.ctr(["task", "exec", ...args], { timeoutMs: 60_000 });

    await t.step("exec echo: output and status 0", async () => {
      const r = await exec(["--exec-id", "e1", ID, "/bin/echo", "x"]);
      equal(r.stdout, "x\n", r.stderr);
      equal(r.code, 0, r.stderr);
    });

    await t.step("exec with exit 3: the status and stderr come through", async () => {
      const r = await exec([
        "--exec-id",
        "e3",
        ID,
        "sh",
        "-c",
        "echo to-err >&2; hostname; exit 3",
      ]);
      equal(r.code, 3, r.stderr);
      equal(r.stderr, "to-err\n");
      equal(r.stdout, `${ID}\n`);
    });

    await t.step("a missing binary fails clearly; the container keeps running", async () => {
      const r = await exec(["--exec-id", "enf", ID, "/bin/no-such-binary"]);
      ok(r.code !== 0, `code ${r.code}`);
      match(r.stderr, /no-such-binary.*(no such file|not found)/i);
      equal((await tasks(ctd))[ID][1], "RUNNING");
    });

    await t.step("stdin reaches an exec'd cat, EOF ends it", async () => {
      const child = new Deno.Command("ctr", {
        args: ["-a", ctd.address, "task", "exec", "--exec-id", "ecat", ID, "cat"],
        stdin: "piped",
        stdout: "piped",
        stderr: "piped",
        signal: AbortSignal.timeout(60_000),
      }).spawn();
      const w = child.stdin.getWriter();
      await w.write(new TextEncoder().encode("from the host\n"));
      await w.close();
      const o = await child.output();
      equal(new TextDecoder().decode(o.stdout), "from the host\n");
      equal(o.code, 0, new TextDecoder().decode(o.stderr));
    });

    await t.step("exec -t gets a tty in the guest, sized by ResizePty", async () => {
      // ctr needs a terminal of its own for -t: script(1) gives it one, sized 13x77 here; ctr
      // forwards that size with ResizePty after Start, so the guest side polls for it.
      const guest = `tty; i=0; while [ "$(busybox stty size)" != "13 77" ] && [ $i -lt 100 ]; ` +
        `do sleep 0.1; i=$((i+1)); done; echo size=$(busybox stty size); exit 4`;
      const cmd = `stty rows 13 cols 77; ctr -a ${ctd.address} task exec -t --exec-id et ${ID} ` +
        `sh -c '${guest}'`;
      const o = await underScript(cmd, 60_000);
      const out = o.out;
      match(out, /\/dev\/pts\/\d+/);
      match(out, /size=13 77/);
      equal(o.code, 4, out);
    });

    await t.step("task ps lists a detached exec; kill --exec-id ends only it", async () => {
      const d = await exec(["-d", "--exec-id", "es", ID, "sleep", "300"]);
      equal(d.code, 0, d.stderr);
      const ps = await ctd.ctr(["task", "ps", ID]);
      equal(ps.code, 0, ps.stderr);
      const pids = ps.stdout.trim().split("\n").slice(1).map((l) =>
        Number(l.trim().split(/\s+/)[0])
      );
      equal(pids.length, 2, ps.stdout);
      ok(pids.includes((await tasks(ctd))[ID][0]), `the VMM pid is listed: ${ps.stdout}`);
      const k = await ctd.ctr(["task", "kill", "--exec-id", "es", "-s", "SIGTERM", ID]);
      equal(k.code, 0, k.stderr);
      await waitFor("es to leave task ps", async () => {
        const p = await ctd.ctr(["task", "ps", ID]);
        return p.stdout.trim().split("\n").length === 2 || undefined;
      }, 30_000);
      // ctr exits with the deleted process's status (SIGTERM: 143).
      const del = await ctd.ctr(["task", "delete", "--exec-id", "es", ID]);
      equal(del.code, 143, del.stderr);
      const again = await ctd.ctr(["task", "delete", "--exec-id", "es", ID]);
      match(again.stderr, /not found/);
      equal((await tasks(ctd))[ID][1], "RUNNING");
    });

    await t.step("the workload is untouched; kill, delete, rm leave nothing behind", async () => {
      equal(await Deno.readTextFile(log), "ready\n");
      // An attached exec still running when the VM stops ends too (137) instead of hanging ctr.
      const attached = ctd.spawnCtr(["task", "exec", "--exec-id", "ew", ID, "sleep", "300"]);
      const attachedOut = attached.output();
      await waitFor("ew to show in task ps", async () => {
        const p = await ctd.ctr(["task", "ps", ID]);
        return p.stdout.trim().split("\n").length === 3 || undefined;
      }, 30_000);
      const k = await ctd.ctr(["task", "kill", "-s", "SIGKILL", ID]);
      equal(k.code, 0, k.stderr);
      equal((await attachedOut).code, 137);
      await waitStopped(ctd, ID);
      equal((await ctd.ctr(["task", "delete", ID])).code, 0);
      equal((await ctd.ctr(["container", "rm", ID])).code, 0);
      await assertNoLeftovers(ctd, [ID]);
    });

    await t.step("ctr run -t: ResizePty reaches the init workload's terminal", async () => {
      const guest = `i=0; while [ "$(busybox stty size)" != "17 91" ] && [ $i -lt 100 ]; ` +
        `do sleep 0.1; i=$((i+1)); done; echo size=$(busybox stty size)`;
      const cmd = `stty rows 17 cols 91; ctr -a ${ctd.address} run --rm -t ${R.join(" ")} ` +
        `${IMAGE} xt1 sh -c '${guest}'`;
      const o = await underScript(cmd);
      const out = o.out;
      match(out, /size=17 91/);
      equal(o.code, 0, out);
      await assertNoLeftovers(ctd, ["xt1"]);
    });

    await t.step("events: exec-added, exec-started and the exec's exit status", async () => {
      events.kill("SIGTERM");
      const lines = (await eventsOut).split("\n");
      const ev = (topic: string, execId: string) =>
        lines.find((l) => l.includes(` ${topic} `) && l.includes(`"exec_id":"${execId}"`));
      ok(ev("/tasks/exec-added", "e3"), lines.join("\n"));
      ok(ev("/tasks/exec-started", "e3"), lines.join("\n"));
      const exit = lines.find((l) => l.includes(" /tasks/exit ") && l.includes(`"id":"e3"`));
      ok(exit, lines.join("\n"));
      match(exit!, /"exit_status":3/);
      const es = lines.find((l) => l.includes(" /tasks/exit ") && l.includes(`"id":"es"`));
      match(es ?? "", /"exit_status":143/);
    });
  } finally {
    await events.close();
    await Deno.remove(log).catch(() => {});
    await ctd.stop();
  }
});
