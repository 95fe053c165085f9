/**
 * The shim against every containerd line CI installs (1.6 bookworm; 1.7 trixie and 2.1 sid, private
 * installs from scripts/setup_containerd.ts): a representative subset per line — `-info` through
 * `ctr plugins inspect-runtime` (2.x), run with exit status and output, `-t` with a controlling
 * terminal, SIGKILL while the VM boots, exec, kill, delete, events and nothing left behind.
 */
import { equal, match, ok } from "node:assert/strict";
import {
  CONTAINERD_LINES,
  type ContainerdLine,
  IMAGE,
  importBusyboxImage,
  RUNTIME,
  startContainerd,
} from "../helpers/containerd.ts";
import {
  assertNoLeftovers,
  checkRunOutput,
  ctrEvents,
  runDetached,
  tasks,
  waitStopped,
} from "../helpers/shim_exec_env.ts";
import { type Provider, startPasst } from "../helpers/providers.ts";
import { startGvproxyBinary } from "../helpers/gvproxy_bin.ts";
import { assertSessionLeader, underScript } from "../helpers/tty.ts";

const R = ["--runtime", RUNTIME];

for (const line of CONTAINERD_LINES) {
  Deno.test(`containerd ${line}: the nerdbox shim runs, execs, kills and cleans up`, async (t) => {
    await shimSubset(line, t);
  });
}

async function shimSubset(line: ContainerdLine, t: Deno.TestContext): Promise<void> {
  const ctd = await startContainerd(`nerdbox-shim-v${line.replace(".", "")}`, line);
  const events = ctrEvents(ctd);
  const eventsOut = events.text;
  try {
    if (line.startsWith("2.")) {
      await t.step("ctr plugins inspect-runtime shows the shim's RuntimeInfo (-info)", async () => {
        const r = await ctd.ctr(["plugins", "inspect-runtime", ...R]);
        equal(r.code, 0, r.stderr);
        const info = JSON.parse(r.stdout);
        equal(info.Name, RUNTIME);
        ok(info.Version.Version);
        equal(info.Features.ociVersionMin, "1.0.0");
        ok(info.Features.linux.namespaces.includes("network"));
      });
    }
    await importBusyboxImage(ctd);

    await t.step("run: exit status, stdout and stderr", () => checkRunOutput(ctd, "v1"));

    await t.step(
      "run -t: the workload leads a session with the pty as controlling tty",
      async () => {
        // ctr needs a terminal of its own for -t: script(1) gives it one. `sh -i` turns on job
        // control, which complains when there is no controlling terminal.
        const cmd = `${ctd.ctrBin} -a ${ctd.address} run --rm -t ${R.join(" ")} ${IMAGE} vt1 ` +
          `sh -ic 'set -- $(cat /proc/$$/stat); echo S$6:P$$:T$7:E; exit 5'`;
        const o = await underScript(cmd);
        const out = o.out;
        equal(o.code, 5, out);
        assertSessionLeader(out);
        await assertNoLeftovers(ctd, ["vt1"]);
      },
    );

    if (line.startsWith("2.")) {
      for (
        const [name, start] of [["passt", startPasst], ["gvproxy", startGvproxyBinary]] as const
      ) {
        await t.step(
          `the seed's command with ${name}: -t shell with job control, network from the annotation`,
          async () => {
            const net: Provider = await start(`nbx-seed-${name}`);
            try {
              const mac = "5a:94:ef:e4:0c:ee";
              const ann = `io.containerd.nerdbox.network.0=socket=${net.socket},mode=unixstream,` +
                `mac=${mac},addr=${net.guestIp}/24`;
              const cmd =
                `${ctd.ctrBin} -a ${ctd.address} run -t --net-host --cap-add CAP_NET_ADMIN ` +
                `--rm ${R.join(" ")} --annotation ${ann} ${IMAGE} seed-${name} ` +
                `sh -ic 'set -- $(cat /proc/$$/stat); echo S$6:P$$:T$7:E; ip addr; ip route; exit 0'`;
              const o = await underScript(cmd);
              const out = o.out;
              equal(o.code, 0, out);
              assertSessionLeader(out);
              match(out, new RegExp(`link/ether ${mac}`));
              match(out, new RegExp(`inet ${net.guestIp.replaceAll(".", "\\.")}/24`));
              match(out, new RegExp(`default via ${net.gatewayIp.replaceAll(".", "\\.")}`));
            } finally {
              await net.close();
            }
            await assertNoLeftovers(ctd, [`seed-${name}`]);
          },
        );
      }
    }

    await t.step("SIGKILL while the VM boots ends the task at once with 137", async () => {
      const log = `/run/${ctd.name}/vk1.log`;
      const r = await ctd.ctr(
        ["run", "-d", ...R, "--log-uri", `file://${log}`, IMAGE, "vk1", "sh", "-c", "echo began"],
        { timeoutMs: 60_000 },
      );
      equal(r.code, 0, r.stderr);
      const t0 = Date.now();
      const k = await ctd.ctr(["task", "kill", "-s", "SIGKILL", "vk1"]);
      equal(k.code, 0, k.stderr);
      await waitStopped(ctd, "vk1", 5_000);
      console.log(`containerd ${line}: SIGKILL during boot → STOPPED after ${Date.now() - t0} ms`);
      equal(
        (await Deno.readTextFile(log).catch(() => "")).includes("began"),
        false,
        "the workload never ran",
      );
      equal((await ctd.ctr(["task", "delete", "vk1"])).code, 0);
      equal((await ctd.ctr(["container", "rm", "vk1"])).code, 0);
      await Deno.remove(log).catch(() => {});
      await assertNoLeftovers(ctd, ["vk1"]);
    });

    await t.step("run -d, exec, kill, delete", async () => {
      const log = await runDetached(ctd, "vd1", "echo ready; exec sleep 1000");
      const x = await ctd.ctr([
        "task",
        "exec",
        "--exec-id",
        "e1",
        "vd1",
        "sh",
        "-c",
        "echo x; exit 4",
      ], {
        timeoutMs: 60_000,
      });
      equal(x.stdout, "x\n", x.stderr);
      equal(x.code, 4);
      equal((await tasks(ctd)).vd1[1], "RUNNING");
      const k = await ctd.ctr(["task", "kill", "-s", "SIGKILL", "vd1"]);
      equal(k.code, 0, k.stderr);
      await waitStopped(ctd, "vd1");
      equal((await ctd.ctr(["task", "delete", "vd1"])).code, 0);
      equal((await ctd.ctr(["container", "rm", "vd1"])).code, 0);
      await Deno.remove(log).catch(() => {});
      await assertNoLeftovers(ctd, ["vd1"]);
    });

    await t.step("events: create, start, exit with status, delete", async () => {
      events.kill("SIGTERM");
      const lines = (await eventsOut).split("\n");
      // the init process's events (an exec's exit carries its exec id as "id")
      const ev = (topic: string, id: string) =>
        lines.find((l) =>
          l.includes(` ${topic} `) && l.includes(`"container_id":"${id}"`) &&
          !/"id":"e\d+"/.test(l)
        );
      for (const topic of ["/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"]) {
        ok(ev(topic, "v1"), `${topic} for v1 in:\n${lines.join("\n")}`);
      }
      match(ev("/tasks/exit", "v1")!, /"exit_status":3/);
      match(ev("/tasks/exit", "vk1")!, /"exit_status":137/);
      match(ev("/tasks/exit", "vd1")!, /"exit_status":137/);
      ok(
        lines.some((l) =>
          l.includes("/tasks/exit") && l.includes('"id":"e1"') && /"exit_status":4/.test(l)
        ),
      );
    });
  } finally {
    await events.close();
    await ctd.stop();
  }
}
