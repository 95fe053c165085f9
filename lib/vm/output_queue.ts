/**
 * One guest process's output stream on the host: the channel reader pushes chunks, and a pump
 * copies them to the process's writer in order. The queue is bounded by `limit` bytes; what
 * happens beyond it is the queue's policy: `drop` counts further chunks as dropped instead of
 * stalling the shared channel (and with it every other process's output) — for exec'd
 * processes; `wait` keeps every byte and tells the reader to stop reading the channel until the
 * consumer caught up (back-pressure into the guest) — for the init workload.
 */

/** Default bound of one process stream's queued bytes. */
export const DEFAULT_OUTPUT_LIMIT = 8 * 1024 * 1024;

/** What a full queue does: discard new chunks, or make the reader wait. */
export type OverflowPolicy = "drop" | "wait";

/** A bounded copy of chunks into a WritableStream. */
export class OutputQueue {
  #writer: WritableStreamDefaultWriter<Uint8Array>;
  #chunks: Uint8Array[] = [];
  #queued = 0;
  #limit: number;
  #dropped = 0;
  #broken = false;
  #closed = false;
  #pump?: Promise<void>;
  #policy: OverflowPolicy;
  #roomWaiters: Array<() => void> = [];

  /** Takes the stream's writer; `limit` bounds the bytes waiting for it. */
  constructor(
    stream: WritableStream<Uint8Array>,
    limit = DEFAULT_OUTPUT_LIMIT,
    policy: OverflowPolicy = "drop",
  ) {
    this.#writer = stream.getWriter();
    this.#limit = limit;
    this.#policy = policy;
  }

  /** Bytes discarded because the consumer fell `limit` bytes behind (or its stream failed). */
  get dropped(): number {
    return this.#dropped;
  }

  /** Bytes waiting to be written (including the chunk being written). */
  get queued(): number {
    return this.#queued;
  }

  /**
   * Queues a chunk without waiting. `drop`: over the bound the chunk is dropped. `wait`: the chunk
   * is kept and, when the queue is now over the bound, the returned promise resolves once it is
   * back under it (the caller should not push more before). After close or a failed stream,
   * chunks are dropped.
   */
  push(chunk: Uint8Array): Promise<void> | undefined {
    if (chunk.length === 0) return;
    const full = this.#queued + chunk.length > this.#limit;
    if (this.#closed || this.#broken || (full && this.#policy === "drop")) {
      this.#dropped += chunk.length;
      return;
    }
    this.#chunks.push(chunk);
    this.#queued += chunk.length;
    this.#pump ??= this.#run();
    if (this.#queued <= this.#limit) return;
    return new Promise<void>((r) => this.#roomWaiters.push(r));
  }

  #wakeIfRoom(): void {
    if (this.#queued > this.#limit && !this.#broken) return;
    for (const w of this.#roomWaiters.splice(0)) w();
  }

  async #run(): Promise<void> {
    while (this.#chunks.length > 0) {
      const chunk = this.#chunks.shift()!;
      try {
        await this.#writer.write(chunk);
      } catch {
        // The consumer's stream failed: nothing more can reach it.
        this.#broken = true;
        for (const c of this.#chunks) this.#dropped += c.length;
        this.#dropped += chunk.length;
        this.#chunks = [];
        this.#queued = 0;
        this.#wakeIfRoom();
        break;
      }
      this.#queued -= chunk.length;
      this.#wakeIfRoom();
    }
    this.#pump = undefined;
  }

  /** Waits until everything queued was written. */
  async drained(): Promise<void> {
    while (this.#pump) await this.#pump;
  }

  /** Writes what is queued, then `trailer` (if any, never dropped), then closes the writer. */
  async close(trailer?: Uint8Array): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.drained();
    if (trailer && !this.#broken) await this.#writer.write(trailer).catch(() => {});
    await this.#writer.close().catch(() => {});
  }
}
