/**
 * The TSI exposure guard on this host's real kernel (no VM needed): a process guarded as the vmm
 * child is (its own cgroup v2 + bind4/bind6 BPF filters) can bind only port 0 and the published
 * host ports; everything else is EPERM. The guarded cgroup is removed afterwards. The libkrun side
 * (a guest listener not asked for is not reachable) is proven in the nested L1:
 * tests/nested/cases/tsi_l1.ts.
 */
import assert from "node:assert/strict";
import { bindFilterProgram } from "../../ffi/bpf_bind.ts";
import { removeTsiCgroup, TSI_CGROUP_FILE } from "../../lib/vm/tsi_guard.ts";

const CHILD = new URL("../helpers/tsi_guard_child.ts", import.meta.url).pathname;

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const p = (l.addr as Deno.NetAddr).port;
  l.close();
  return p;
}

Deno.test("bind filter program: one compare per allowed port (and port 0), then deny/allow", () => {
  const prog = bindFilterProgram([80, 80, 443]);
  assert.equal(prog.length / 8, 1 + 3 + 4); // load, 0/80/443, deny (2), allow (2)
  const v = new DataView(prog.buffer);
  assert.equal(v.getInt32(2 * 8 + 4, true), 0x5000, "port 80 in network order");
  assert.equal(v.getInt16(3 * 8 + 2, true), 2, "jump over the deny pair to allow");
});

Deno.test("guarded process: binds only port 0 and the published ports (IPv4 and IPv6)", async () => {
  const allowed = freePort();
  const denied = freePort();
  const stateDir = await Deno.makeTempDir({ prefix: "nb-tsi-guard-" });
  try {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--no-check", CHILD, stateDir, `${allowed},${denied},0`, String(allowed)],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stderr = new TextDecoder().decode(out.stderr);
    assert.equal(out.code, 0, stderr);
    const { cgroup, results } = JSON.parse(new TextDecoder().decode(out.stdout));
    assert.deepEqual(results, {
      [`${allowed}/0.0.0.0`]: "ok",
      [`${allowed}/::`]: "ok",
      [`${denied}/0.0.0.0`]: "PermissionDenied",
      [`${denied}/::`]: "PermissionDenied",
      "0/0.0.0.0": "ok",
      "0/::": "ok",
    });
    assert.match(cgroup, /^\/sys\/fs\/cgroup\/.*\/?nerdbox-tsi-\d+$/);
    assert.equal((await Deno.readTextFile(`${stateDir}/${TSI_CGROUP_FILE}`)).trim(), cgroup);
    await removeTsiCgroup(stateDir);
    await assert.rejects(Deno.stat(cgroup), Deno.errors.NotFound);
  } finally {
    await removeTsiCgroup(stateDir);
    await Deno.remove(stateDir, { recursive: true });
  }
});
