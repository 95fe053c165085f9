/**
 * libkrun e2e, the containerd shim (inside L1): a private containerd 1.6 runs
 * bin/containerd-shim-nerdbox-v1 with the libkrun backend; ctr runs, execs, kills and watches
 * events. The TSI policy through the shim: a container's listener is published only with
 * `io.containerd.nerdbox.publish`. A `--mount type=bind` host directory is read and written in the
 * VM (the volume share).
 */
import assert from "node:assert/strict";
import { libkrunTest } from "../../helpers/kvm_guests.ts";
import { IMAGE, importBusyboxImage, RUNTIME, startContainerd } from "../../helpers/containerd.ts";
import { KRUN_ENV, listeningPorts, pollHttp } from "./krun.ts";

const R = ["--runtime", RUNTIME, "--annotation", "io.containerd.nerdbox.backend=libkrun"];

async function until(what: string, fn: () => Promise<boolean>, ms = 300_000): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await fn()) return;
    await new Promise((r) => setTimeout(r, 500));
  }
  throw new Error(`timed out waiting for ${what}`);
}

libkrunTest("libkrun shim: ctr run, exec, kill, events, and the publish annotation", async () => {
  for (const [k, v] of Object.entries(KRUN_ENV)) Deno.env.set(k, v);
  const ctd = await startContainerd("nerdbox-l1-shim");
  const events = ctd.spawnCtr(["events"]);
  const eventsOut = new Response(events.stdout).text();
  events.stderr.cancel();
  try {
    await importBusyboxImage(ctd);
    // A host directory bound in (the VM's volume share, served by libkrun's virtio-fs).
    const data = await Deno.makeTempDir({ prefix: "nb-l1-bind-" });
    await Deno.writeTextFile(`${data}/from-host`, "host-says-hi\n");
    const r = await ctd.ctr([
      "run",
      "--rm",
      ...R,
      "--mount",
      `type=bind,src=${data},dst=/data,options=rbind:rw`,
      IMAGE,
      "kr1",
      "sh",
      "-c",
      "echo out; cat /proc/cmdline; cat /data/from-host; echo guest-wrote > /data/from-guest; exit 3",
    ], { timeoutMs: 300_000 });
    assert.equal(r.code, 3, r.stderr);
    assert.match(r.stdout, /^out$/m);
    assert.match(r.stdout, /init=\/init\.krun/, "booted by libkrun");
    assert.match(r.stdout, /^host-says-hi$/m, "the host file, read in the VM");
    assert.equal(await Deno.readTextFile(`${data}/from-guest`), "guest-wrote\n");
    await Deno.remove(data, { recursive: true });

    // Detached, with two listeners: 9093 asked for by the annotation, 9094 not.
    const log = `/run/${ctd.name}/kr2.log`;
    const d = await ctd.ctr([
      "run",
      "-d",
      ...R,
      "--annotation",
      "io.containerd.nerdbox.publish=9093:9093",
      "--log-uri",
      `file://${log}`,
      IMAGE,
      "kr2",
      "sh",
      "-c",
      "mkdir -p /www; echo shim-page > /www/index.html; httpd -p 9093 -h /www; " +
      'httpd -p 9094 -h /www; trap "echo got-term; exit 42" TERM; echo ready; ' +
      "while :; do sleep 1; done",
    ], { timeoutMs: 300_000 });
    assert.equal(d.code, 0, d.stderr);
    await until(
      "kr2 ready",
      async () => (await Deno.readTextFile(log).catch(() => "")).includes("ready"),
    );
    assert.equal(await pollHttp("http://127.0.0.1:9093/", 60_000), "shim-page\n");
    const ex = await ctd.ctr([
      "task",
      "exec",
      "--exec-id",
      "e1",
      "kr2",
      "sh",
      "-c",
      "netstat -ltn; exit 5",
    ]);
    assert.equal(ex.code, 5, ex.stderr);
    console.log(`guest netstat:\n${ex.stdout}`);
    assert.ok(!(await listeningPorts()).includes(9094), "9094 was not asked for: not published");
    const kill = await ctd.ctr(["task", "kill", "kr2"]);
    assert.equal(kill.code, 0, kill.stderr);
    await until("kr2 stopped", async () => {
      const ls = await ctd.ctr(["task", "ls"]);
      return /kr2\s+\d+\s+STOPPED/.test(ls.stdout);
    });
    assert.match(await Deno.readTextFile(log), /got-term/);
    assert.equal((await ctd.ctr(["task", "delete", "kr2"])).code, 0);
    assert.equal((await ctd.ctr(["container", "rm", "kr2"])).code, 0);
  } finally {
    events.kill("SIGTERM");
    await ctd.stop();
  }
  const ev = await eventsOut;
  for (
    const topic of [
      "/tasks/create",
      "/tasks/start",
      "/tasks/exec-added",
      "/tasks/exit",
      "/tasks/delete",
    ]
  ) {
    assert.match(ev, new RegExp(topic), `event ${topic} seen`);
  }
  assert.match(ev, /"exit_status":42/, "the exit event carries status 42");
});
