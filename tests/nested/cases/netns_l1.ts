/**
 * libkrun e2e, namespaces (inside L1): with `--netns` and with `--cni` the VMM runs in the pod
 * netns, so TSI opens the guest's sockets there: a guest server answers at the pod address (every
 * guest listener is published inside a joined netns) and nothing is published in L1's own netns.
 */
import assert from "node:assert/strict";
import { libkrunTest } from "../../helpers/kvm_guests.ts";
import { makeTestNetns } from "../../helpers/netns.ts";
import {
  DEBIAN_CNI_BIN,
  tempDirWith,
  tutorialBridge,
  tutorialLoopback,
} from "../../helpers/cni_fixtures.ts";
import { listeningPorts, pollHttp, spawnKrun, waitFor, withRootfs } from "./krun.ts";

const SERVE = "httpd -p 8000 -h /www; echo listening; while :; do sleep 1; done";

libkrunTest(
  "libkrun --netns: the guest's server answers at the netns address, not on the host",
  () =>
    withRootfs("netns", async (rootfs, id) => {
      const ns = await makeTestNetns("nbl1n");
      const child = spawnKrun(id, ["--netns", ns.path, rootfs, "--", "/bin/sh", "-c", SERVE]);
      const out = waitFor(child.stdout, /listening/);
      const err = waitFor(child.stderr, /$^/);
      try {
        await out.matched;
        let got = "";
        for (let i = 0; i < 60 && !got.includes("guest-page"); i++) {
          got = (await ns.run("busybox", ["wget", "-q", "-O", "-", `http://${ns.address}:8000/`]))
            .stdout;
          if (!got.includes("guest-page")) await new Promise((r) => setTimeout(r, 1000));
        }
        assert.equal(got, `guest-page ${id}\n`);
        assert.ok(!(await listeningPorts()).includes(8000), "nothing published in L1's netns");
      } finally {
        child.kill("SIGTERM");
        await child.status;
        await out.done;
        await err.done;
        await ns.delete();
      }
    }),
);

libkrunTest(
  "libkrun --cni: the guest's server answers at the pod IP (bridge plugin)",
  () =>
    withRootfs("cni", async (rootfs, id) => {
      const conf = await tempDirWith({
        "10-bridge.conf": tutorialBridge("nbl1cni", "nbl1br0", "10.214.7.0/24"),
        "99-loopback.conf": tutorialLoopback(),
      });
      const child = spawnKrun(id, [
        "--cni",
        "--cni-conf-dir",
        conf,
        "--cni-bin-dir",
        DEBIAN_CNI_BIN,
        rootfs,
        "--",
        "/bin/sh",
        "-c",
        SERVE,
      ]);
      const out = waitFor(child.stdout, /listening/);
      const err = waitFor(child.stderr, /$^/);
      try {
        await out.matched;
        assert.equal(await pollHttp("http://10.214.7.2:8000/", 60_000), `guest-page ${id}\n`);
      } finally {
        child.kill("SIGTERM");
        const st = await child.status;
        await out.done;
        await err.done;
        await Deno.remove(conf, { recursive: true });
        assert.ok([0, 143].includes(st.code), `run ended ${st.code}: ${err.text()}`);
      }
    }),
);
