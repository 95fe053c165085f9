/**
 * Faults under `nerdbox run --backend qemu` (real QEMU/TCG guests, real passt): kill -9 of the VMM
 * and of passt in the middle of a run, a provider that never answers DHCP (real passt with
 * --no-dhcp), a provider that stops reading, and a full disk while the guest image is assembled
 * (a tiny tmpfs as NERDBOX_CACHE_DIR). Each ends in a clear status and message, and the host
 * snapshot scoped to the run's id shows nothing left behind (process, state dir, socket, mount).
 */
import { doesNotMatch, equal, match, notEqual, ok } from "node:assert/strict";
import { NERDBOX, nerdbox, runArgv } from "../helpers/nerdbox_cli.ts";
import { nerdboxProcesses, withScopedRun } from "../helpers/host_snapshot.ts";

/** A rootfs and a unique id; afterwards nothing of the id may remain on the host. */
function withRun(fn: (rootfs: string, id: string, dir: string) => Promise<void>): Promise<void> {
  return withScopedRun("nbx-faults", fn);
}

/** Spawns `nerdbox run` and resolves once its stdout printed `marker`. */
async function spawnUntil(args: string[], marker: string, env: Record<string, string> = {}) {
  const child = new Deno.Command(NERDBOX, {
    args,
    env,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let stdout = "";
  let stderr = "";
  const dec = new TextDecoder();
  const errDone = (async () => {
    for await (const c of child.stderr) stderr += dec.decode(c);
  })();
  const reader = child.stdout.getReader();
  let sawMarker!: () => void;
  const seen = new Promise<void>((r) => sawMarker = r);
  const outDone = (async () => {
    while (true) {
      const { value, done } = await reader.read();
      if (done) break;
      stdout += dec.decode(value);
      if (stdout.includes(marker)) sawMarker();
    }
  })();
  const status = child.status.then(async (s) => {
    await Promise.all([outDone, errDone]);
    return { code: s.code, stdout, stderr };
  });
  // Either the marker shows up, or the run ends first (then the test sees why).
  await Promise.race([seen, status]);
  return { child, status };
}

async function pidOf(id: string, what: RegExp): Promise<number> {
  const p = (await nerdboxProcesses()).find((l) => l.includes(id) && what.test(l));
  ok(p, `no ${what} process of ${id}`);
  return Number(p.split(" ")[0]);
}

Deno.test("faults: kill -9 of QEMU mid-run: status 125, a clear message, nothing left", async () => {
  await withRun(async (rootfs, id) => {
    const { status } = await spawnUntil(
      runArgv(rootfs, ["/bin/sh", "-c", "echo ready; sleep 300"], {
        name: id,
        backend: "qemu",
        accel: "tcg",
      }),
      "ready",
    );
    Deno.kill(await pidOf(id, /qemu-system/), "SIGKILL");
    const r = await status;
    equal(r.code, 125, r.stderr);
    match(r.stderr, /guest channel|QEMU|qemu/);
    match(r.stderr, /closed before the workload exited|killed|SIGKILL|status 137/);
  });
});

Deno.test("faults: kill -9 of passt mid-run: the run still ends, and says its network died", async () => {
  await withRun(async (rootfs, id) => {
    const { status } = await spawnUntil(
      runArgv(rootfs, ["/bin/sh", "-c", "echo ready; sleep 3; echo after"], {
        name: id,
        backend: "qemu",
        accel: "tcg",
      }),
      "ready",
    );
    Deno.kill(await pidOf(id, /passt/), "SIGKILL");
    const r = await status;
    // The workload itself needs no network here: it finishes. But the user must learn that the
    // VM lost its network provider during the run.
    match(r.stdout, /after/);
    match(r.stderr, /passt.*(exited|killed|died|SIGKILL)/i);
  });
});

Deno.test("faults: a provider that never answers DHCP: the distinct dhcp_timeout status", async () => {
  await withRun(async (rootfs, id, dir) => {
    // Real passt, with its DHCP server switched off, as the provider of a dhcp=true network.
    // passt drops to nobody: its socket dir must be writable and reachable for it.
    await Deno.chmod(dir, 0o711);
    await Deno.mkdir(`${dir}/passt`, { mode: 0o1777 });
    await Deno.chmod(`${dir}/passt`, 0o1777);
    const sock = `${dir}/passt/p.sock`;
    const passt = new Deno.Command("passt", {
      args: ["-f", "-q", "-1", "--no-dhcp", "-s", sock],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    try {
      for (
        let i = 0;
        i < 200 && !(await Deno.lstat(sock).then((s) => s.isSocket, () => false));
        i++
      ) {
        await new Promise((r) => setTimeout(r, 25));
      }
      const r = await nerdbox(
        runArgv(rootfs, ["/bin/true"], {
          name: id,
          backend: "qemu",
          accel: "tcg",
          flags: ["--net", `socket=${sock},mode=unixstream,mac=02:00:00:00:00:42,dhcp=true`],
        }),
      );
      equal(r.code, 122, r.stderr); // GUEST_EXIT.dhcp_timeout
      match(r.stderr, /dhcp_timeout/);
      match(r.stderr, /02:00:00:00:00:42|DHCP/);
    } finally {
      try {
        passt.kill("SIGKILL");
      } catch { /* gone */ }
      await passt.output().catch(() => {});
    }
  });
});

Deno.test("faults: a provider that accepts but never reads does not block the run", async () => {
  await withRun(async (rootfs, id, dir) => {
    // TEST FAKE provider: a stream socket whose one connection is never read.
    const sock = `${dir}/stall.sock`;
    const listener = Deno.listen({ transport: "unix", path: sock });
    const held: Deno.Conn[] = [];
    const accepting = (async () => {
      for await (const c of listener) held.push(c);
    })().catch(() => {});
    try {
      // Flood the NIC in the background (its frames pile up in a socket nobody reads; the
      // flooder itself may block in sendto), then exit: the VM must still power off.
      const flood = "(ping -c 100000 -i 0.001 10.99.0.1 >/dev/null 2>&1 &); sleep 3; echo finished";
      const r = await nerdbox(runArgv(rootfs, ["/bin/sh", "-c", flood], {
        name: id,
        backend: "qemu",
        accel: "tcg",
        flags: ["--net", `socket=${sock},mode=unixstream,mac=02:00:00:00:00:43,addr=10.99.0.2/24`],
      }));
      equal(r.code, 0, r.stderr);
      equal(r.stdout, "finished\n");
    } finally {
      listener.close();
      for (const c of held) c.close();
      await accepting;
    }
  });
});

Deno.test("faults: a full disk while assembling the guest image: clear error, nothing half-made", async () => {
  await withRun(async (rootfs, id, dir) => {
    const cache = `${dir}/tiny-cache`;
    await Deno.mkdir(cache);
    const mount = await new Deno.Command("mount", {
      args: ["-t", "tmpfs", "-o", "size=4m", "nbx-faults-tmpfs", cache],
    }).output();
    equal(mount.code, 0, new TextDecoder().decode(mount.stderr));
    try {
      const r = await nerdbox(
        runArgv(rootfs, ["/bin/true"], { name: id, backend: "qemu", accel: "tcg" }),
        { NERDBOX_CACHE_DIR: cache },
      );
      equal(r.code, 125, r.stderr);
      match(r.stderr, /No space left on device|ENOSPC|no space/i);
      doesNotMatch(r.stderr, /at (async )?[\w.]+ \(file:/, "a message, not a stack trace");
      const left = await Array.fromAsync(Deno.readDir(cache));
      const half = left.filter((e) => e.name.startsWith(".") || e.name.includes(".tmp"));
      equal(half.map((e) => e.name).join(","), "", "no half-written image in the cache");
      for (const e of left.filter((e) => e.name.startsWith("guest-"))) {
        notEqual(
          await Deno.lstat(`${cache}/${e.name}/complete`).then(() => true, () => false),
          false,
          `${e.name} is published without its completion marker`,
        );
      }
    } finally {
      await new Deno.Command("umount", { args: [cache] }).output();
    }
  });
});
