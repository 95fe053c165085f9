/**
 * lib/vm/channel.ts multiplexing against the real guest init (guest/main.ts in dev mode on a unix
 * socket, inside its own netns and mount/UTS namespaces, busybox ext4 rootfs on a loop device):
 * the init workload keeps running while exec'd processes start, get stdin, are signalled, fail to
 * start, and produce output concurrently — each routed to its own stdio and exit.
 */
import assert from "node:assert/strict";
import { guestInitArgv, type LoopRootfs, makeLoopRootfs, makeNetns } from "../helpers/guest_env.ts";
import type { GuestConfig, GuestProcess } from "../../lib/guest_protocol.ts";
import { type ChannelProcess, GuestChannel } from "../../lib/vm/channel.ts";
import { GuestExecError } from "../../lib/vm/guest_error.ts";
import type { VmExit } from "../../lib/vm/types.ts";

function proc(args: string[], extra: Partial<GuestProcess> = {}): GuestProcess {
  return { args, env: ["PATH=/bin"], cwd: "/", uid: 0, gid: 0, terminal: false, ...extra };
}

/** A text sink that can wait for a pattern. */
function sink() {
  let text = "";
  let closed = false;
  const waiters: Array<() => void> = [];
  const dec = new TextDecoder();
  const stream = new WritableStream<Uint8Array>({
    write(c) {
      text += dec.decode(c, { stream: true });
      for (const w of waiters.splice(0)) w();
    },
    close() {
      closed = true;
    },
  });
  return {
    stream,
    text: () => text,
    closed: () => closed,
    async waitFor(re: RegExp, what: string): Promise<void> {
      const deadline = Date.now() + 20_000;
      while (!re.test(text)) {
        if (Date.now() > deadline) {
          throw new Error(`${what}: ${re} not seen in ${JSON.stringify(text)}`);
        }
        await new Promise<void>((r) => {
          waiters.push(r);
          setTimeout(r, 200);
        });
      }
    },
  };
}

/** The real guest init in dev mode with a GuestChannel as its host peer. */
async function withGuest(
  fn: (
    ch: GuestChannel,
    init: {
      out: ReturnType<typeof sink>;
      stdin: (s: string) => void;
      end: () => void;
      done: Promise<VmExit>;
    },
  ) => Promise<void>,
): Promise<{ status: Deno.CommandStatus; stderr: string }> {
  const dir = await Deno.makeTempDir({ prefix: "chx-" });
  const ns = await makeNetns(`chx-${crypto.randomUUID().slice(0, 8)}`);
  let rootfs: LoopRootfs | undefined;
  let child: Deno.ChildProcess | undefined;
  let listener: Deno.UnixListener | undefined;
  try {
    rootfs = await makeLoopRootfs(dir);
    const sock = `${dir}/ctl.sock`;
    listener = Deno.listen({ transport: "unix", path: sock });
    child = new Deno.Command("ip", {
      args: [
        "netns",
        "exec",
        ns.name,
        "unshare",
        "-m",
        "-u",
        ...guestInitArgv(sock, `${dir}/work`),
      ],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const stderr = new Response(child.stderr).text();
    const conn = await listener.accept();
    const ch = new GuestChannel(conn);
    const config: GuestConfig = {
      version: 1,
      hostname: "chx",
      rootfs: { kind: "block", device: rootfs.device, fstype: "ext4" },
      // The workload runs until the test writes a line to its stdin.
      process: proc(["sh", "-c", "echo init-up; read line; echo init-got $line"]),
      networks: [],
      dhcpTimeoutMs: 2000,
    };
    let ctl!: ReadableStreamDefaultController<Uint8Array>;
    const stdin = new ReadableStream<Uint8Array>({ start: (c) => void (ctl = c) });
    const out = sink();
    const done = ch.run(config, { stdin, stdout: out.stream, stderr: sink().stream });
    try {
      await fn(ch, {
        out,
        stdin: (s) => ctl.enqueue(new TextEncoder().encode(s)),
        end: () => ctl.close(),
        done,
      });
    } finally {
      ch.close();
    }
    const status = await child.status;
    child = undefined;
    return { status, stderr: await stderr };
  } finally {
    if (child) {
      try {
        child.kill("SIGKILL");
      } catch { /* gone */ }
      await child.status;
    }
    listener?.close();
    await ns.remove();
    await rootfs?.detach();
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("channel + real guest init: exec'd processes alongside the workload", async () => {
  const r = await withGuest(async (ch, init) => {
    await init.out.waitFor(/init-up\n/, "workload");

    // echo: output and exit 0.
    const echoOut = sink();
    const echo = await ch.exec(proc(["echo", "hello-exec"]), {
      stdout: echoOut.stream,
      stderr: sink().stream,
    });
    assert.ok(echo.pid > 1, `guest pid ${echo.pid}`);
    assert.deepEqual(await echo.exited, { code: 0 });
    assert.equal(echoOut.text(), "hello-exec\n");
    assert.ok(echoOut.closed());

    // stdout/stderr routing and a non-zero status.
    const o3 = sink();
    const e3 = sink();
    const three = await ch.exec(proc(["sh", "-c", "echo out3; echo err3 >&2; exit 3"]), {
      stdout: o3.stream,
      stderr: e3.stream,
    });
    assert.deepEqual(await three.exited, { code: 3 });
    assert.equal(o3.text(), "out3\n");
    assert.equal(e3.text(), "err3\n");

    // stdin to cat, with EOF when the host's stream ends.
    const catOut = sink();
    const cat = await ch.exec(proc(["cat"]), {
      stdin: ReadableStream.from([
        new TextEncoder().encode("piped "),
        new TextEncoder().encode("in\n"),
      ]),
      stdout: catOut.stream,
      stderr: sink().stream,
    });
    assert.deepEqual(await cat.exited, { code: 0 });
    assert.equal(catOut.text(), "piped in\n");

    // A binary that does not exist: 127 and the guest's message; the VM goes on.
    await assert.rejects(
      ch.exec(proc(["/bin/nope"]), { stdout: sink().stream, stderr: sink().stream }),
      (e: unknown) => {
        assert.ok(e instanceof GuestExecError);
        assert.equal(e.code, 127);
        assert.match(e.message, /"\/bin\/nope": no such file or directory/);
        return true;
      },
    );
    // Not executable: 126.
    await assert.rejects(
      ch.exec(proc(["/bin/noexec"]), { stdout: sink().stream, stderr: sink().stream }),
      (e: unknown) => e instanceof GuestExecError && e.code === 126,
    );

    // A signal reaches only the exec'd process.
    const sleeper = await ch.exec(proc(["sleep", "30"]), {
      stdout: sink().stream,
      stderr: sink().stream,
    });
    await sleeper.signal(15);
    assert.deepEqual(await sleeper.exited, { code: 143 });

    // A terminal exec gets a pty of its own.
    const ttyOut = sink();
    const tty = await ch.exec(
      proc(["sh", "-c", "test -t 0 && test -t 1 && tty"], { terminal: true }),
      {
        stdout: ttyOut.stream,
        stderr: sink().stream,
        terminal: true,
      },
    );
    await (tty as ChannelProcess).resize(120, 50);
    assert.deepEqual(await tty.exited, { code: 0 });
    assert.match(ttyOut.text(), /^\/dev\/pts\/\d+\r?\n$/);

    // Concurrent execs: each stream gets exactly its own lines.
    const script = (tag: string) => `i=0; while [ $i -lt 300 ]; do echo ${tag}$i; i=$((i+1)); done`;
    const [oa, ob] = [sink(), sink()];
    const [a, b] = await Promise.all([
      ch.exec(proc(["sh", "-c", script("a")]), { stdout: oa.stream, stderr: sink().stream }),
      ch.exec(proc(["sh", "-c", script("b")]), { stdout: ob.stream, stderr: sink().stream }),
    ]);
    assert.deepEqual(await Promise.all([a.exited, b.exited]), [{ code: 0 }, { code: 0 }]);
    const expect = (tag: string) => Array.from({ length: 300 }, (_, i) => `${tag}${i}\n`).join("");
    assert.equal(oa.text(), expect("a"));
    assert.equal(ob.text(), expect("b"));

    // A stuck consumer of a chatty exec does not hold back the workload's output.
    let release!: () => void;
    const blocked = new Promise<void>((r) => (release = r));
    const stuck = new WritableStream<Uint8Array>({ write: () => blocked }, { highWaterMark: 1 });
    const chatty = await ch.exec(
      proc([
        "sh",
        "-c",
        "while :; do echo xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx; done",
      ]),
      { stdout: stuck, stderr: sink().stream },
    );
    init.stdin("bye\n");
    await init.out.waitFor(/init-got bye\n/, "workload output while an exec's reader is stuck");
    await chatty.signal(9);
    release();
    assert.equal((await chatty.exited).code, 137);
    init.end();
    assert.deepEqual(await init.done, { code: 0 });
  });
  assert.equal(r.status.code, 0, r.stderr);
});
