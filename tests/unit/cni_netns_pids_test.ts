/**
 * netnsPids (the in-process `ip netns pids`) against real namespaces without touching the host's
 * named netns list: a process in its own anonymous netns (`unshare -n`) is the only pid found for
 * that netns; a process in the host netns is found there and not in the other; a missing netns
 * file gives none.
 */
import { deepEqual, ok } from "node:assert/strict";
import { netnsPids } from "../../lib/net/netns_pids.ts";

function sleeper(args: string[]): Deno.ChildProcess {
  return new Deno.Command(args[0], { args: args.slice(1), stdout: "null", stderr: "null" }).spawn();
}

async function nsInode(pid: number): Promise<number | null> {
  for (let i = 0; i < 100; i++) {
    const own = Deno.statSync(`/proc/${pid}/ns/net`).ino;
    if (own !== Deno.statSync("/proc/self/ns/net").ino) return own;
    await new Promise((r) => setTimeout(r, 20)); // unshare has not switched yet
  }
  throw new Error(`process ${pid} never left the host netns`);
}

Deno.test("netnsPids: the processes whose /proc/PID/ns/net is the netns file's inode", async () => {
  const isolated = sleeper(["unshare", "-n", "sleep", "30"]);
  const host = sleeper(["sleep", "30"]);
  try {
    await nsInode(isolated.pid);
    deepEqual(netnsPids("net", `/proc/${isolated.pid}/ns`), [isolated.pid]);
    const inHost = netnsPids("net", "/proc/self/ns");
    ok(inHost.includes(host.pid), `host sleeper ${host.pid} in the host netns`);
    ok(!inHost.includes(isolated.pid), "the isolated one is not");
    ok(!inHost.includes(Deno.pid), "nerdbox itself is never listed");
    deepEqual(netnsPids(`nbx-absent-${crypto.randomUUID()}`), []);
  } finally {
    for (const c of [isolated, host]) {
      c.kill("SIGKILL");
      await c.status;
    }
  }
});
