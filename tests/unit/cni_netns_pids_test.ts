/**
 * netnsPids (the in-process `ip netns pids`): against a real named netns with a process in it,
 * the same pids as `ip netns pids`; an absent netns gives none. Creates and removes its own netns.
 */
import { deepEqual, ok } from "node:assert/strict";
import { netnsPids } from "../../lib/net/cni_session.ts";

async function ip(...args: string[]): Promise<string> {
  const o = await new Deno.Command("ip", { args, stdout: "piped", stderr: "piped" }).output();
  if (!o.success) throw new Error(`ip ${args.join(" ")}: ${new TextDecoder().decode(o.stderr)}`);
  return new TextDecoder().decode(o.stdout);
}

Deno.test("netnsPids: the processes in a named netns, as ip netns pids lists them", async () => {
  const name = `nbxpids-${crypto.randomUUID().slice(0, 8)}`;
  await ip("netns", "add", name);
  const child = new Deno.Command("ip", {
    args: ["netns", "exec", name, "sleep", "30"],
    stdout: "null",
    stderr: "null",
  }).spawn();
  try {
    let mine: number[] = [];
    for (let i = 0; i < 100 && mine.length === 0; i++) {
      await new Promise((r) => setTimeout(r, 20));
      mine = netnsPids(name);
    }
    ok(mine.includes(child.pid), `child ${child.pid} found in ${mine}`);
    const theirs = (await ip("netns", "pids", name)).split(/\s+/).filter(Boolean).map(Number);
    deepEqual([...mine].sort(), [...theirs].sort());
    deepEqual(netnsPids(`${name}-absent`), []);
  } finally {
    child.kill("SIGKILL");
    await child.status;
    await ip("netns", "del", name);
  }
});
