/**
 * Both ends of `exec` over the control socket (lib/runtime/control.ts frames): the supervisor runs
 * the process in the guest through VmHandle.exec and streams its output back; the client copies
 * its stdin in and the output out, and returns the process's exit status.
 */
import type { ProcessSpec } from "../spec/types.ts";
import type { VmHandle } from "../vm/types.ts";
import { connectControl, ConnReader, encodeFrame, FRAME, writeAll } from "./control.ts";

function frameSink(conn: Deno.Conn, kind: number): WritableStream<Uint8Array> {
  return new WritableStream({
    async write(chunk) {
      await writeAll(conn, encodeFrame(kind, chunk)).catch(() => {});
    },
  });
}

function exitFrame(code: number, error?: string): Uint8Array {
  const body = JSON.stringify(error === undefined ? { code } : { code, error });
  return encodeFrame(FRAME.exit, new TextEncoder().encode(body));
}

/** Supervisor side: runs `process` in the VM and streams it over `conn`. */
export async function serveExec(
  conn: Deno.Conn,
  reader: ConnReader,
  process: ProcessSpec,
  handle: VmHandle | undefined,
  id: string,
): Promise<void> {
  if (!handle?.exec) {
    await writeAll(conn, exitFrame(1, `container ${JSON.stringify(id)} is not running`));
    return;
  }
  const stdin = new ReadableStream<Uint8Array>({
    async pull(ctl) {
      const f = await reader.frame().catch(() => undefined);
      if (!f || (f.kind === FRAME.stdin && f.payload.length === 0)) ctl.close();
      else if (f.kind === FRAME.stdin) ctl.enqueue(f.payload);
    },
  });
  try {
    const p = await handle.exec(process, {
      stdin,
      stdout: frameSink(conn, FRAME.stdout),
      stderr: frameSink(conn, FRAME.stderr),
      terminal: false,
    });
    const exit = await p.exited;
    await writeAll(conn, exitFrame(exit.code, exit.error));
  } catch (e) {
    await writeAll(conn, exitFrame(126, `exec failed: ${(e as Error).message}`)).catch(() => {});
  }
}

/** Client side: runs `process` in sandbox `id`, copying this process's stdio; returns its status. */
export async function execClient(
  control: string,
  id: string,
  process: ProcessSpec,
  opts: { stdin: boolean },
): Promise<{ code: number; error?: string }> {
  const conn = await connectControl(control, id);
  try {
    await writeAll(conn, new TextEncoder().encode(JSON.stringify({ op: "exec", process }) + "\n"));
    if (opts.stdin) {
      void (async () => {
        for await (const chunk of Deno.stdin.readable) {
          await writeAll(conn, encodeFrame(FRAME.stdin, chunk));
        }
        await writeAll(conn, encodeFrame(FRAME.stdin, new Uint8Array(0)));
      })().catch(() => {});
    } else {
      await writeAll(conn, encodeFrame(FRAME.stdin, new Uint8Array(0)));
    }
    const reader = new ConnReader(conn);
    while (true) {
      const f = await reader.frame();
      if (!f) return { code: 1, error: `container ${JSON.stringify(id)}: the supervisor hung up` };
      if (f.kind === FRAME.stdout) await writeFile(Deno.stdout, f.payload);
      else if (f.kind === FRAME.stderr) await writeFile(Deno.stderr, f.payload);
      else if (f.kind === FRAME.exit) {
        return JSON.parse(new TextDecoder().decode(f.payload));
      }
    }
  } finally {
    try {
      conn.close();
    } catch { /* closed */ }
  }
}

async function writeFile(f: { write(p: Uint8Array): Promise<number> }, data: Uint8Array) {
  let off = 0;
  try {
    while (off < data.length) off += await f.write(data.subarray(off));
  } catch { /* reader gone */ }
}
