/**
 * Shim logs, logrus-style lines (`time=… level=… msg=… id=…`) written to each container's bundle
 * `log` fifo, which containerd copies into its own log. The fifo is opened read-write (never blocks,
 * never EPIPE) and writes are queued, bounded and never awaited by callers.
 */

/** Log levels in order. */
export type Level = "debug" | "info" | "warn" | "error";
const ORDER: Record<Level, number> = { debug: 0, info: 1, warn: 2, error: 3 };
const MAX_PENDING = 256;

function quote(v: string): string {
  return /^[A-Za-z0-9_./:@-]+$/.test(v) ? v : JSON.stringify(v);
}

/** Formats one log line. */
export function formatLine(level: Level, msg: string, fields: Record<string, string>): string {
  const parts = [`time=${quote(new Date().toISOString())}`, `level=${level}`, `msg=${quote(msg)}`];
  for (const [k, v] of Object.entries(fields)) parts.push(`${k}=${quote(v)}`);
  return parts.join(" ") + "\n";
}

/** A log sink on one fifo or file. */
export class LogSink {
  #file?: Deno.FsFile;
  #pending = 0;
  #tail: Promise<void> = Promise.resolve();
  #minLevel: Level;
  #fields: Record<string, string>;

  private constructor(
    file: Deno.FsFile | undefined,
    minLevel: Level,
    fields: Record<string, string>,
  ) {
    this.#file = file;
    this.#minLevel = minLevel;
    this.#fields = fields;
  }

  /** Opens `path` (the bundle's `log` fifo); a missing path gives a sink that drops lines. */
  static async open(
    path: string,
    minLevel: Level,
    fields: Record<string, string>,
  ): Promise<LogSink> {
    let file: Deno.FsFile | undefined;
    try {
      const st = await Deno.stat(path);
      if (st.isFifo) file = await Deno.open(path, { read: true, write: true });
    } catch { /* no log fifo */ }
    return new LogSink(file, minLevel, fields);
  }

  /** Writes one line at `level` (dropped below the minimum level or when too much is queued). */
  log(level: Level, msg: string, fields: Record<string, string> = {}): void {
    if (!this.#file || ORDER[level] < ORDER[this.#minLevel]) return;
    if (this.#pending >= MAX_PENDING) return;
    const bytes = new TextEncoder().encode(formatLine(level, msg, { ...this.#fields, ...fields }));
    const file = this.#file;
    this.#pending++;
    this.#tail = this.#tail.then(async () => {
      try {
        let off = 0;
        while (off < bytes.length) off += await file.write(bytes.subarray(off));
      } catch { /* containerd went away */ }
      this.#pending--;
    });
  }

  /** Waits (at most `timeoutMs`) for queued lines, then closes the fifo. */
  async close(timeoutMs = 1000): Promise<void> {
    const file = this.#file;
    this.#file = undefined;
    if (!file) return;
    await Promise.race([this.#tail, new Promise((r) => setTimeout(r, timeoutMs))]);
    try {
      file.close();
    } catch { /* closed */ }
  }
}
