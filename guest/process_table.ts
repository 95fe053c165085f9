/**
 * Init's table of running processes (frame process id → Running) and the frames that arrived for
 * a process before it started: STDIN, STDIN_EOF, SIGNAL and RESIZE frames are routed here.
 */
import { decodeJson, type Frame, MsgType } from "../lib/guest_protocol.ts";
import type { Running } from "./workload.ts";

/** The processes init runs for the host, by frame process id (0 = the workload). */
export class ProcessTable {
  readonly #procs = new Map<number, Running>();
  readonly #pending = new Map<number, Frame[]>();

  /** The running process with frame id `id`. */
  get(id: number): Running | undefined {
    return this.#procs.get(id);
  }

  /** Every running process. */
  values(): IterableIterator<Running> {
    return this.#procs.values();
  }

  /** Forgets process `id` (it ended). */
  delete(id: number): void {
    this.#procs.delete(id);
  }

  /** Routes a stdin/signal/resize frame to its process, or keeps it until the process starts. */
  deliver(f: Frame): void {
    const p = this.#procs.get(f.proc);
    if (!p) {
      // Not started yet (or already gone: then the frames are kept but never used).
      this.#pending.set(f.proc, [...(this.#pending.get(f.proc) ?? []), f]);
      return;
    }
    switch (f.type) {
      case MsgType.STDIN:
        void p.stdin(f.payload);
        break;
      case MsgType.STDIN_EOF:
        void p.stdinEof();
        break;
      case MsgType.SIGNAL:
        p.signal(decodeJson<{ signo: number }>(f.payload).signo);
        break;
      case MsgType.RESIZE: {
        const { cols, rows } = decodeJson<{ cols: number; rows: number }>(f.payload);
        p.resize(cols, rows);
        break;
      }
    }
  }

  /** Records started process `p` and hands it the frames that arrived before it. */
  adopt(p: Running): void {
    this.#procs.set(p.id, p);
    for (const f of this.#pending.get(p.id) ?? []) this.deliver(f);
    this.#pending.delete(p.id);
  }
}
