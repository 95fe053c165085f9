/**
 * libkrun e2e, basics (inside L1): exit status, signals both ways, stdout/stderr, stdin, env and
 * workdir, resolv.conf, and `auto` choosing libkrun where /dev/kvm runs guests.
 */
import assert from "node:assert/strict";
import { libkrunTest } from "../../helpers/kvm_guests.ts";
import { krun, spawnKrun, waitFor, withRootfs } from "./krun.ts";

libkrunTest(
  "libkrun: exit status, stdout, stderr, env and workdir",
  () =>
    withRootfs("exit", async (rootfs, id) => {
      const r = await krun(id, [
        "-e",
        "GREETING=hello there",
        "-w",
        "/tmp",
        rootfs,
        "--",
        "/bin/sh",
        "-c",
        'echo "$GREETING from $(pwd)"; echo oops >&2; exit 3',
      ]);
      assert.equal(r.code, 3, r.stderr);
      assert.equal(r.stdout, "hello there from /tmp\n");
      assert.match(r.stderr, /^oops$/m);
    }),
);

libkrunTest(
  "libkrun: a workload killed by a signal exits 128+n",
  () =>
    withRootfs("sig", async (rootfs, id) => {
      const r = await krun(id, [rootfs, "--", "/bin/sh", "-c", "kill -USR1 $$"]);
      assert.equal(r.code, 138, r.stderr);
    }),
);

libkrunTest(
  "libkrun: SIGTERM to nerdbox run reaches the workload, whose exit is run's",
  () =>
    withRootfs("term", async (rootfs, id) => {
      const child = spawnKrun(id, [
        rootfs,
        "--",
        "/bin/sh",
        "-c",
        'trap "echo got-term; exit 7" TERM; echo ready; while :; do sleep 1; done',
      ]);
      const out = waitFor(child.stdout, /ready/);
      const err = waitFor(child.stderr, /$^/);
      await out.matched;
      child.kill("SIGTERM");
      const st = await child.status;
      await out.done;
      await err.done;
      assert.equal(st.code, 7, err.text());
      assert.match(out.text(), /got-term/);
    }),
);

libkrunTest(
  "libkrun: stdin with -i reaches the workload; stdout comes back whole",
  () =>
    withRootfs("stdin", async (rootfs, id) => {
      const input = Array.from({ length: 2000 }, (_, i) => `line ${i}`).join("\n") + "\n";
      const r = await krun(id, ["-i", rootfs, "--", "/bin/sh", "-c", "wc -l; echo end"], {
        input,
      });
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /^2000\nend\n$/);
    }),
);

libkrunTest(
  "libkrun: resolv.conf and hostname in the guest under TSI",
  () =>
    withRootfs("dns", async (rootfs, id) => {
      const r = await krun(id, [
        "--hostname",
        "krun-host",
        rootfs,
        "--",
        "/bin/sh",
        "-c",
        "hostname; cat /etc/resolv.conf; cat /proc/cmdline",
      ]);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /^krun-host$/m);
      // TSI without io.containerd.nerdbox.ctr.dns: the guest init writes resolv.conf, no nameserver.
      assert.match(r.stdout, /^# written by nerdbox guest init$/m, r.stdout);
      assert.match(r.stdout, /tsi_hijack/, "the guest kernel runs with TSI");
    }),
);

libkrunTest(
  "libkrun: --backend auto (the default) picks libkrun where /dev/kvm runs guests",
  () =>
    withRootfs("auto", async (rootfs, id) => {
      const dry = await krun(id, ["--dry-run", "--json", rootfs, "--", "/bin/true"], {
        backend: null,
      });
      assert.equal(dry.code, 0, dry.stderr);
      assert.equal(JSON.parse(dry.stdout).backend, "libkrun");
      const r = await krun(id, [rootfs, "--", "/bin/cat", "/proc/cmdline"], { backend: null });
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /init=\/init\.krun/, "booted by libkrun, not QEMU");
    }),
);
