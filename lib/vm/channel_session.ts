/**
 * The host-side state of one guest process on the channel (lib/vm/channel.ts): its bounded output
 * queues, pid, start and exit; how its EXIT payload becomes a VmExit; the signal/size checks.
 */
import { decodeJson, type GuestError } from "../guest_protocol.ts";
import { OutputQueue } from "./output_queue.ts";
import { guestErrorExit, GuestExecError, printable } from "./guest_error.ts";
import type { VmExit, VmStdio } from "./types.ts";

/** The host-side state of one guest process (0 = the init workload). */
export interface Session {
  id: number;
  out: OutputQueue;
  err: OutputQueue;
  pid?: number;
  error?: GuestError;
  ended: boolean;
  started: PromiseWithResolvers<number>;
  exited: PromiseWithResolvers<VmExit>;
  stdin?: ReadableStreamDefaultReader<Uint8Array>;
}

/** Parses an EXIT payload's status (0-255), or undefined. */
export function exitCode(payload: Uint8Array): number | undefined {
  const { code } = decodeJson<{ code?: unknown }>(payload);
  return typeof code === "number" && Number.isInteger(code) && code >= 0 && code <= 255
    ? code
    : undefined;
}

/** `exit` with the EXIT payload's OOM verdict added when the guest reported one. */
export function withOom(exit: VmExit, payload: Uint8Array): VmExit {
  return decodeJson<{ oomKilled?: unknown }>(payload).oomKilled === true
    ? { ...exit, oomKilled: true }
    : exit;
}

/** Throws unless `signo` is a signal number 1-64. */
export function checkSignal(signo: number): void {
  if (!Number.isInteger(signo) || signo < 1 || signo > 64) {
    throw new Error(`signal ${signo}: expected a signal number 1-64`);
  }
}

/** Throws unless `cols` and `rows` are terminal sizes (0-65535). */
export function checkSize(cols: number, rows: number): void {
  for (const [name, v] of [["cols", cols], ["rows", rows]] as const) {
    if (!Number.isInteger(v) || v < 0 || v > 0xffff) {
      throw new Error(`resize: ${name} ${v}: expected an integer 0-65535`);
    }
  }
}

/**
 * A new session for process `id` writing to `stdio`. The workload's output is never dropped: a
 * full queue stops the reader (back-pressure into the guest). An exec'd process's consumer must
 * not stall the others: its excess is dropped. A forwarded connection (`lossless`, a `dial`) is a
 * byte stream that must stay whole: it waits too.
 */
export function openSession(
  id: number,
  stdio: VmStdio,
  outputLimit: number | undefined,
  lossless = false,
): Session {
  const policy = id === 0 || lossless ? "wait" : "drop";
  const s: Session = {
    id,
    out: new OutputQueue(stdio.stdout, outputLimit, policy),
    err: new OutputQueue(stdio.stderr, outputLimit, policy),
    ended: false,
    started: Promise.withResolvers<number>(),
    exited: Promise.withResolvers<VmExit>(),
  };
  s.started.promise.catch(() => {}); // observed by exec; unobserved for the workload
  return s;
}

/** Ends session `s`: stops its stdin, writes out its output, then settles its promises. */
export async function finishSession(s: Session, exit: VmExit): Promise<void> {
  if (s.ended) return;
  s.ended = true;
  if (s.id !== 0 && s.stdin) void s.stdin.cancel().catch(() => {});
  await s.out.close();
  const dropped = s.out.dropped + s.err.dropped;
  await s.err.close(
    dropped > 0
      ? new TextEncoder().encode(
        `nerdbox: ${dropped} bytes of output were dropped: the reader fell too far behind\n`,
      )
      : undefined,
  );
  if (s.pid === undefined) {
    s.started.reject(
      s.error
        ? new GuestExecError(
          printable(s.error.kind),
          `the guest could not start the process: ${
            printable(s.error.message)
          } (status ${exit.code})`,
          exit.code,
        )
        : new Error(exit.error ?? `the process ended (status ${exit.code}) before it started`),
    );
  }
  s.exited.resolve(exit);
}

/** The exit of exec'd session `s` from its EXIT payload. */
export function execExit(s: Session, payload: Uint8Array): VmExit {
  const code = exitCode(payload);
  if (code === undefined) {
    return { code: 125, error: `guest reported an invalid exit status for process ${s.id}` };
  }
  return s.error
    ? { code, error: guestErrorExit({ ...s.error, code }).error }
    : withOom({ code }, payload);
}
