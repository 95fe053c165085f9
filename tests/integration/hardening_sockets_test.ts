/**
 * Local users cannot reach nerdbox's own sockets: the guest control channel a run listens on
 * (whoever connected first would receive the GuestConfig, with the workload's env) and every other
 * socket nerdbox makes in a run's state dir refuse an unprivileged user, even when nerdbox runs
 * with umask 000. Checked with a real connect() as `nobody` (setpriv + socat).
 */
import { ok } from "node:assert/strict";
import { NERDBOX, runArgv } from "../helpers/nerdbox_cli.ts";
import { makeBusyboxRootfs } from "../helpers/rootfs.ts";
import { RUN_STATE_ROOT } from "../../lib/cli/run.ts";
import { assertNothingLeft, takeHostSnapshot } from "../helpers/host_snapshot.ts";

/** Tries to connect to `path` as nobody; true when the connection was made. */
async function nobodyCanConnect(path: string): Promise<{ ok: boolean; why: string }> {
  const out = await new Deno.Command("setpriv", {
    args: [
      "--reuid=65534",
      "--regid=65534",
      "--clear-groups",
      "socat",
      "-u",
      "/dev/null",
      `UNIX-CONNECT:${path}`,
    ],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).output();
  return { ok: out.success, why: new TextDecoder().decode(out.stderr).trim() };
}

async function socketsUnder(dir: string): Promise<string[]> {
  const found: string[] = [];
  let entries: Deno.DirEntry[];
  try {
    entries = await Array.fromAsync(Deno.readDir(dir));
  } catch {
    return found; // removed meanwhile
  }
  for (const e of entries) {
    const p = `${dir}/${e.name}`;
    if (e.isDirectory) found.push(...await socketsUnder(p));
    else if ((await Deno.lstat(p).catch(() => null))?.isSocket) found.push(p);
  }
  return found;
}

Deno.test("sockets: a run's channel and state-dir sockets refuse other local users (umask 000)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "nbx-sock-" });
  const id = `nbx-sock-${crypto.randomUUID().slice(0, 8)}`;
  let child: Deno.ChildProcess | undefined;
  const before = await takeHostSnapshot({ aspects: ["processes", "runFiles"] });
  try {
    await makeBusyboxRootfs(`${dir}/rootfs`);
    // A fixed shell line (no user input): only to start nerdbox with umask 000.
    child = new Deno.Command("sh", {
      args: [
        "-c",
        'umask 000; exec "$0" "$@"',
        NERDBOX,
        ...runArgv(`${dir}/rootfs`, ["/bin/sh", "-c", "sleep 60"], {
          name: id,
          backend: "qemu",
          accel: "tcg",
        }),
      ],
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn();
    // Look while the VM boots and runs: the channel socket exists from before QEMU starts.
    const seen = new Map<string, { ok: boolean; why: string }>();
    const deadline = Date.now() + 60_000;
    while (Date.now() < deadline && seen.size < 1) {
      for await (const e of Deno.readDir(RUN_STATE_ROOT)) {
        if (!e.name.startsWith(`${id}-`)) continue;
        for (const s of await socketsUnder(`${RUN_STATE_ROOT}/${e.name}`)) {
          if (s.includes("/passt/")) continue; // passt's own socket (passt runs as nobody)
          if (!seen.has(s)) seen.set(s, await nobodyCanConnect(s));
        }
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    ok(seen.size > 0, "the run's state dir had sockets to check");
    const reachable = [...seen].filter(([, r]) => r.ok).map(([s]) => s);
    ok(
      reachable.length === 0,
      `an unprivileged user could connect to: ${reachable.join(", ")} (checked ${[
        ...seen.keys(),
      ]})`,
    );
  } finally {
    if (child) {
      try {
        child.kill("SIGTERM");
      } catch { /* gone */ }
      await child.status;
    }
    await Deno.remove(dir, { recursive: true });
    await assertNothingLeft(before, {
      aspects: ["processes", "runFiles"],
      only: new RegExp(id),
    }, 15_000);
  }
});
