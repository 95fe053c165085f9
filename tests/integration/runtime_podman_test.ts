/**
 * podman (Debian 12: 4.3 with conmon and netavark) with nerdbox as its OCI runtime
 * (`podman --runtime /abs/bin/nerdbox`): `run --rm IMAGE echo hi` prints hi; a detached container
 * serves HTTP from its VM on podman's own network (netavark bridge → the container's IP), and
 * `podman exec`, `podman stop`, `podman rm` work; afterwards no sandbox, supervisor or VMM is left.
 */
import assert from "node:assert/strict";
import { PODMAN_IMAGE, startPodman } from "../helpers/podman.ts";
import { httpGet } from "../helpers/pod_run.ts";
import { processesMatching } from "../helpers/nerdbox_cli.ts";
import { until } from "../helpers/runtime_cli.ts";

Deno.test("podman --runtime nerdbox: run --rm echo; -d + exec + netavark network + stop + rm", async () => {
  const p = await startPodman();
  try {
    const hi = await p.run(["run", "--rm", PODMAN_IMAGE, "echo", "hi"]);
    assert.equal(hi.code, 0, hi.stderr);
    assert.equal(hi.stdout, "hi\n");
    const status = await p.run(["run", "--rm", PODMAN_IMAGE, "sh", "-c", "exit 7"]);
    assert.equal(status.code, 7, `the workload's exit status comes back: ${status.stderr}`);

    const d = await p.run([
      "run",
      "-d",
      "--name",
      "nbxweb",
      PODMAN_IMAGE,
      "sh",
      "-c",
      "echo hello-from-podman > /tmp/index.html; exec busybox httpd -f -p 8000 -h /tmp",
    ]);
    assert.equal(d.code, 0, d.stderr);
    const cid = d.stdout.trim();
    assert.match(cid, /^[0-9a-f]{64}$/);
    const ex = await p.run(["exec", "nbxweb", "echo", "from-exec"]);
    assert.equal(ex.code, 0, ex.stderr);
    assert.equal(ex.stdout, "from-exec\n");
    const ip = (await p.run(["inspect", "nbxweb", "--format", "{{.NetworkSettings.IPAddress}}"]))
      .stdout.trim();
    assert.match(ip, /^10\.217\.9\.\d+$/, `an address on podman's network (${p.subnet})`);
    let body: string | undefined;
    await until(
      async () => (body = await httpGet(`http://${ip}:8000/`).catch(() => undefined)) !== undefined,
      120_000,
    );
    assert.equal(body, "hello-from-podman", "the guest's httpd answers at the container's IP");
    const stop = await p.run(["stop", "-t", "5", "nbxweb"]);
    assert.equal(stop.code, 0, stop.stderr);
    const state = (await p.run(["inspect", "nbxweb", "--format", "{{.State.Status}}"])).stdout;
    assert.equal(state.trim(), "exited");
    const rm = await p.run(["rm", "nbxweb"]);
    assert.equal(rm.code, 0, rm.stderr);
    assert.ok(
      await until(async () => (await processesMatching(cid.slice(0, 24))).length === 0, 30_000),
      "no supervisor or VMM of the container left",
    );
  } finally {
    await p.close();
  }
});
