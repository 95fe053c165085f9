/**
 * gVisor's "Using CNI" tutorial, step by step, with `nerdbox` in place of `runsc` and busybox
 * httpd in place of python's http.server: a netns and the bridge/loopback plugins run by hand
 * (CNI_COMMAND=ADD … plugin < config), `nerdbox spec --cwd … --netns … -- httpd …`,
 * `nerdbox run -detach ID` from the bundle dir, GET POD_IP:8000 → Hello World!, `nerdbox kill`,
 * `nerdbox delete`, plugins DEL, netns delete — then nothing of the sandbox is left: no supervisor
 * or VMM process, no state dir, no tap or redirect qdisc in the netns, no host link/netns/file.
 */
import assert from "node:assert/strict";
import { pickCniNetwork } from "../../lib/net/cni_config.ts";
import { cleanupHost, recordHostBaseline } from "../../lib/net/cni_host_cleanup.ts";
import { makeBusyboxRootfs } from "../helpers/rootfs.ts";
import { DEBIAN_CNI_BIN, tutorialBridge, tutorialLoopback } from "../helpers/cni_fixtures.ts";
import { httpGet } from "../helpers/pod_run.ts";
import { assertNothingLeft, takeHostSnapshot } from "../helpers/host_snapshot.ts";
import { nb, nbOk, ociState, pidAlive, sh, until } from "../helpers/runtime_cli.ts";

const ROOT = "/run/nerdbox/runtime"; // the default --root: the tutorial passes none

Deno.test("gVisor CNI tutorial with nerdbox: spec, run -detach, curl the pod IP, kill, delete; nothing left", async () => {
  for (const p of ["bridge", "host-local", "loopback"]) {
    await Deno.stat(`${DEBIAN_CNI_BIN}/${p}`).catch(() => {
      throw new Error(
        `${DEBIAN_CNI_BIN}/${p} missing: apt-get install containernetworking-plugins`,
      );
    });
  }
  const id = `nbxtut${crypto.randomUUID().replaceAll("-", "").slice(0, 8)}`;
  const brName = `nbxtb${id.slice(6, 12)}`;
  const netDir = await Deno.makeTempDir({ prefix: "nbxtut-net.d-" });
  const conf = tutorialBridge("mynet", brName, "10.215.7.0/24");
  await Deno.writeTextFile(`${netDir}/10-bridge.conf`, JSON.stringify(conf));
  await Deno.writeTextFile(`${netDir}/99-loopback.conf`, JSON.stringify(tutorialLoopback()));
  const hostState = await Deno.makeTempDir({ prefix: "nbxtut-host-" });
  await recordHostBaseline(await pickCniNetwork(netDir, "mynet"), hostState);
  const before = await takeHostSnapshot({ aspects: ["processes", "netns", "links", "runFiles"] });
  const bundle = await Deno.makeTempDir({ prefix: "nbxtut-bundle-" });
  const netns = `/var/run/netns/${id}`;
  const cniEnv = (command: string) => ({
    CNI_PATH: DEBIAN_CNI_BIN,
    CNI_CONTAINERID: id,
    CNI_COMMAND: command,
    CNI_NETNS: netns,
    CNI_IFNAME: "eth0",
    PATH: Deno.env.get("PATH") ?? "/usr/sbin:/usr/bin:/sbin:/bin",
  });
  const files = [...Deno.readDirSync(netDir)].map((e) => `${netDir}/${e.name}`).sort();
  const plugins = async (command: string) => {
    for (const f of command === "DEL" ? [...files].reverse() : files) {
      const text = await Deno.readTextFile(f);
      await sh(`${DEBIAN_CNI_BIN}/${JSON.parse(text).type}`, [], cniEnv(command), text);
    }
  };
  let sandboxPid = 0;
  try {
    // sudo ip netns add ${CNI_CONTAINERID}; for file in net.d/*: plugin < file
    await sh("ip", ["netns", "add", id]);
    await plugins("ADD");
    const podIp = /inet (\d+\.\d+\.\d+\.\d+)/.exec(
      await sh("ip", ["-n", id, "-4", "addr", "show", "eth0"]),
    )?.[1];
    assert.ok(podIp, "the bridge plugin gave eth0 an address");
    // mkdir -p rootfs/var/www/html; echo Hello World! > …/index.html; runsc spec …
    await makeBusyboxRootfs(`${bundle}/rootfs`);
    await Deno.mkdir(`${bundle}/rootfs/var/www/html`, { recursive: true });
    await Deno.writeTextFile(`${bundle}/rootfs/var/www/html/index.html`, "Hello World!\n");
    await nbOk([
      "spec",
      "--cwd",
      "/var/www/html",
      "--netns",
      netns,
      "--",
      "httpd",
      "-f",
      "-p",
      "8000",
    ], bundle);
    const spec = JSON.parse(await Deno.readTextFile(`${bundle}/config.json`));
    assert.equal(spec.root.path, "rootfs");
    assert.deepEqual(spec.process.args, ["httpd", "-f", "-p", "8000"]);
    assert.ok(spec.linux.namespaces.some((n: { path?: string }) => n.path === netns));
    // sudo runsc run -detach ${CNI_CONTAINERID}  (bundle: the current directory)
    const run = await nb(["run", "-detach", id], bundle);
    assert.equal(run.code, 0, run.stderr);
    const st = await ociState([], id);
    assert.equal(st.status, "running");
    assert.equal(st.bundle, bundle);
    sandboxPid = st.pid;
    assert.ok(pidAlive(sandboxPid), "state's pid is a live process");
    // curl http://${POD_IP}:8000/
    let body: string | undefined;
    await until(
      async () =>
        (body = await httpGet(`http://${podIp}:8000/`).catch(() => undefined)) !== undefined,
      120_000,
    );
    assert.equal(body, "Hello World!");
    // nerdbox inspect --sandbox: which network, which provider, the pod IP
    const info = JSON.parse(await nbOk(["inspect", "--sandbox", id, "--json"]));
    assert.equal(info.status, "running");
    assert.equal(info.network.netns, netns);
    assert.match(info.network.provider, /tc redirect|passt|TSI/);
    assert.ok(
      info.podIps.some((a: string) => a.startsWith(`${podIp}/`)),
      JSON.stringify(info.podIps),
    );
    assert.ok(pidAlive(info.vmmPid), "the VMM pid inspect reports is alive");
    assert.match(
      await sh("ip", ["-n", id, "-o", "link", "show"]),
      /nbxt[0-9a-f]{8}/,
      "the VM's tap is in the netns while it runs",
    );
    // sudo runsc kill ${CNI_CONTAINERID}; sudo runsc delete ${CNI_CONTAINERID}
    assert.equal((await nb(["kill", id])).code, 0);
    assert.ok(
      await until(async () => (await ociState([], id)).status === "stopped", 60_000),
      "stopped after kill",
    );
    await nbOk(["delete", id]);
    assert.equal((await nb(["state", id])).code, 1, "state of a deleted sandbox fails");
    await assert.rejects(Deno.stat(`${ROOT}/${id}`), Deno.errors.NotFound);
    assert.ok(!pidAlive(sandboxPid), "the supervisor is gone");
    // nothing of the VM is left in the pod netns: no tap, no ingress qdisc on eth0
    assert.doesNotMatch(await sh("ip", ["-n", id, "-o", "link", "show"]), /nbxt/);
    assert.doesNotMatch(await sh("tc", ["-n", id, "qdisc", "show", "dev", "eth0"]), /ingress/);
    // CNI_COMMAND=DEL …; sudo ip netns delete ${CNI_CONTAINERID}
    await plugins("DEL");
    await sh("ip", ["netns", "delete", id]);
  } finally {
    if (sandboxPid && pidAlive(sandboxPid)) await nb(["delete", "--force", id]);
    await plugins("DEL").catch(() => {});
    await sh("ip", ["netns", "delete", id]).catch(() => {});
    await sh("ip", ["link", "del", brName]).catch(() => {}); // the bridge plugin leaves its bridge
    await cleanupHost(hostState);
    for (const d of [netDir, bundle, hostState]) await Deno.remove(d, { recursive: true });
  }
  await assertNothingLeft(
    before,
    {
      aspects: ["processes", "netns", "links", "runFiles"],
      ignore: /^dir \/run\/nerdbox\/runtime$/,
    },
    10_000,
    "left behind by the tutorial",
  );
});
