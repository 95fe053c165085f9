/**
 * `nerdbox demo` end to end (backend auto → QEMU/TCG on this machine), run inside a test netns so
 * its host server and passt stay private: the workload shows its DHCP address and default route,
 * fetches the host server through the gateway, and exits 0.
 */
import { equal, match } from "node:assert/strict";
import { makeTestNetns } from "../helpers/netns.ts";

const NERDBOX = new URL("../../bin/nerdbox", import.meta.url).pathname;

Deno.test("nerdbox demo: shows the VM's network and reaches the host server; exit 0", async () => {
  const ns = await makeTestNetns("nbxqm");
  try {
    const r = await ns.run(NERDBOX, ["demo", "--backend", "qemu", "--accel", "tcg"]);
    equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
    match(r.stdout, /inet 10\.77\.0\.2\/24 .* eth0/);
    match(r.stdout, /default via 10\.77\.0\.1 dev eth0/);
    match(r.stdout, /hello from the nerdbox host/);
    match(r.stderr, /host server saw 1 request\(s\) from 127\.0\.0\.1/);
    const bad = await ns.run(NERDBOX, ["demo", "--accel", "warp"]);
    equal(bad.code, 2);
    match(bad.stderr, /--accel "warp": expected auto, kvm or tcg/);
  } finally {
    await ns.delete();
  }
});
