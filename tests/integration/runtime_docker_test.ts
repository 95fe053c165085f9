/**
 * Docker (Debian 12's docker.io: dockerd 20.10 with containerd and containerd-shim-runc-v2) with
 * nerdbox registered as a runtime (`--add-runtime nerdbox=/abs/bin/nerdbox`): `docker run --rm
 * --runtime nerdbox IMAGE echo hi` prints hi and returns the workload's status. dockerd runs on
 * private state with no bridge and no iptables changes, so containers use `--network none`.
 */
import assert from "node:assert/strict";
import { DOCKER_IMAGE, startDockerd } from "../helpers/docker.ts";

Deno.test("docker run --runtime nerdbox: echo hi, exit status, -d + exec + stop + rm", async () => {
  const d = await startDockerd();
  try {
    const base = ["run", "--runtime", "nerdbox", "--network", "none"];
    const hi = await d.run([...base, "--rm", DOCKER_IMAGE, "echo", "hi"]);
    assert.equal(hi.code, 0, `${hi.stderr}\n${await d.log()}`);
    assert.equal(hi.stdout, "hi\n");
    const seven = await d.run([...base, "--rm", DOCKER_IMAGE, "sh", "-c", "exit 7"]);
    assert.equal(seven.code, 7, seven.stderr);
    const bg = await d.run([...base, "-d", "--name", "nbxbg", DOCKER_IMAGE, "sleep", "300"]);
    assert.equal(bg.code, 0, bg.stderr);
    const ex = await d.run(["exec", "nbxbg", "echo", "from-exec"]);
    assert.equal(ex.code, 0, ex.stderr);
    assert.equal(ex.stdout, "from-exec\n");
    const stop = await d.run(["stop", "-t", "5", "nbxbg"]);
    assert.equal(stop.code, 0, stop.stderr);
    const rm = await d.run(["rm", "nbxbg"]);
    assert.equal(rm.code, 0, rm.stderr);
  } finally {
    await d.close();
  }
});
