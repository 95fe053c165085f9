/**
 * The shim end to end: a private containerd 1.6 runs bin/containerd-shim-nerdbox-v1, ctr is the
 * client, a busybox image built here runs in real QEMU guests. Each step checks what ctr prints,
 * and that nothing is left over afterwards (daemon, VMM, mounts, sockets, bundles).
 */
import { equal, match, ok } from "node:assert/strict";
import { IMAGE, importBusyboxImage, RUNTIME, startContainerd } from "../helpers/containerd.ts";
import {
  assertNoLeftovers,
  checkRunOutput,
  ctrEvents,
  processesWith,
  runDetached as detached,
  tasks,
  waitStopped,
} from "../helpers/shim_exec_env.ts";
import { underScript } from "../helpers/tty.ts";
import { startPasst } from "../helpers/providers.ts";
import { runCommandText } from "../helpers/procs.ts";

const R = ["--runtime", RUNTIME];

Deno.test("ctr runs busybox in nerdbox microVMs through the shim", async (t) => {
  const ctd = await startContainerd();
  const events = ctrEvents(ctd);
  const eventsOut = events.text;
  try {
    await importBusyboxImage(ctd);

    await t.step("exit code, stdout and stderr come through", () => checkRunOutput(ctd, "ex1"));

    await t.step(
      "stdin flows in (CloseIO at EOF); all of a large output precedes Wait",
      async () => {
        const out = await runCommandText("ctr", [
          "-a",
          ctd.address,
          "run",
          "--rm",
          ...R,
          IMAGE,
          "io1",
          "sh",
          "-c",
          "cat; yes abcdefghij | head -n 30000",
        ], { stdin: new TextEncoder().encode("data from the host\n") });
        const stdout = out.stdout;
        equal(out.code, 0, out.stderr);
        ok(stdout.startsWith("data from the host\nabcdefghij\n"), stdout.slice(0, 100));
        equal(stdout.length, "data from the host\n".length + 11 * 30000);
        await assertNoLeftovers(ctd, ["io1"]);
      },
    );

    await t.step("terminal mode (ctr run -t): the workload has a tty in the guest", async () => {
      // ctr needs a terminal of its own for -t: script(1) gives it one.
      const cmd = `ctr -a ${ctd.address} run --rm -t ${R.join(" ")} ${IMAGE} tty1 ` +
        `sh -c 'tty; exit 5'`;
      const o = await underScript(cmd);
      const out = o.out;
      match(out, /\/dev\/pts\/\d+/);
      equal(o.code, 5, out);
      await assertNoLeftovers(ctd, ["tty1"]);
    });

    await t.step("a bad annotation is refused at create, naming field and value", async () => {
      const r = await ctd.ctr(
        [
          "run",
          "--rm",
          ...R,
          "--annotation",
          "io.containerd.nerdbox.network.0=socket=/run/none.sock,mode=bogus,mac=02:00:00:00:00:01",
          IMAGE,
          "bad1",
          "true",
        ],
        { timeoutMs: 60_000 },
      );
      equal(r.code, 1);
      match(r.stderr, /io\.containerd\.nerdbox\.network\.0: mode="bogus": expected unixgram/);
      match(r.stderr, /invalid argument/);
      await ctd.ctr(["container", "rm", "bad1"]);
      await assertNoLeftovers(ctd, ["bad1"]);
    });

    await t.step("a network annotation configures the guest (passt in a netns)", async () => {
      const net = await startPasst("nbshim", ["--no-dhcp-dns", "--no-dhcp-search"]);
      try {
        const mac = "5a:94:ef:e4:0c:ee";
        const r = await ctd.ctr(
          [
            "run",
            "--rm",
            ...R,
            "--annotation",
            `io.containerd.nerdbox.network.0=socket=${net.socket},mode=unixstream,mac=${mac},addr=192.168.77.2/24`,
            IMAGE,
            "net1",
            "sh",
            "-c",
            "ip addr; ip route",
          ],
          { timeoutMs: 150_000 },
        );
        equal(r.code, 0, r.stderr);
        match(r.stdout, new RegExp(`link/ether ${mac}`));
        match(r.stdout, /inet 192\.168\.77\.2\/24/);
        match(r.stdout, /default via 192\.168\.77\.1/);
      } finally {
        await net.close();
      }
      await assertNoLeftovers(ctd, ["net1"]);
    });

    const runDetached = (id: string, script: string) => detached(ctd, id, script);

    await t.step(
      "kill delivers SIGTERM to the workload; task ls, delete, exit status",
      async () => {
        // The workload is PID 1 of its namespace, so only a handler makes SIGTERM end it: status 42
        // can only come from the trap inside the guest.
        const log = await runDetached(
          "k1",
          `trap "echo got-term; exit 42" TERM; echo ready; while :; do sleep 1; done`,
        );
        const [pid, status] = (await tasks(ctd)).k1;
        equal(status, "RUNNING");
        ok(pid > 0);
        const kill = await ctd.ctr(["task", "kill", "k1"]); // SIGTERM
        equal(kill.code, 0, kill.stderr);
        await waitStopped(ctd, "k1");
        match(await Deno.readTextFile(log), /ready\ngot-term\n/);
        const del = await ctd.ctr(["task", "delete", "k1"]);
        equal(del.code, 0, del.stderr);
        const rm = await ctd.ctr(["container", "rm", "k1"]);
        equal(rm.code, 0, rm.stderr);
        await Deno.remove(log);
        await assertNoLeftovers(ctd, ["k1"]);
      },
    );

    await t.step(
      "one daemon serves two containers; a dying VMM ends only its own task",
      async () => {
        const logs = [];
        for (const id of ["m1", "m2"]) {
          logs.push(await runDetached(id, "echo ready; exec sleep 1000"));
        }
        const a1 = await Deno.readTextFile(`${ctd.bundleDir("m1")}/address`);
        const a2 = await Deno.readTextFile(`${ctd.bundleDir("m2")}/address`);
        equal(a1, a2);
        const socket = a1.replace("unix://", "");
        equal((await processesWith(socket)).length, 1, "exactly one shim daemon");
        const t0 = await tasks(ctd);
        Deno.kill(t0.m1[0], "SIGKILL"); // the VMM of m1 dies
        await waitStopped(ctd, "m1");
        equal((await tasks(ctd)).m2[1], "RUNNING");
        const k = await ctd.ctr(["task", "kill", "-s", "SIGKILL", "m2"]);
        equal(k.code, 0, k.stderr);
        await waitStopped(ctd, "m2");
        for (const id of ["m1", "m2"]) {
          equal((await ctd.ctr(["task", "delete", id])).code, 0);
          equal((await ctd.ctr(["container", "rm", id])).code, 0);
        }
        for (const l of logs) {
          await Deno.remove(l);
        }
        await assertNoLeftovers(ctd, ["m1", "m2"]);
      },
    );

    await t.step("ctr events shows create, start, exit (with status) and delete", async () => {
      events.kill("SIGTERM");
      const text = await eventsOut;
      const lines = text.split("\n");
      const ev = (topic: string, id: string) =>
        lines.find((l) => l.includes(` ${topic} `) && l.includes(`"container_id":"${id}"`));
      for (const topic of ["/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"]) {
        ok(ev(topic, "ex1"), `${topic} for ex1 in:\n${text}`);
      }
      match(ev("/tasks/exit", "ex1")!, /"exit_status":3/);
      match(ev("/tasks/exit", "k1")!, /"exit_status":42/);
      match(ev("/tasks/exit", "m2")!, /"exit_status":137/);
      const m1 = ev("/tasks/exit", "m1")!;
      ok(m1, "an exit event for the container whose VMM died");
      ok(!/"exit_status":0[,}]/.test(m1) && /"exit_status":\d+/.test(m1), m1);
    });
  } finally {
    await events.close();
    await ctd.stop();
  }
});
