/**
 * A process's stdio as containerd hands it over: fifo paths (ctr holds the other ends), `file://`
 * URIs, or "" for none. Output fifos are opened read-write (no blocking, no EPIPE once ctr closes
 * its end); stdin is opened read-only in the background (that open blocks until ctr opens its write
 * end) and can be unblocked by closing. Streams given to the VM never close the files themselves:
 * the shim closes them after every byte was written.
 */

/** The paths from CreateTaskRequest / ExecProcessRequest. */
export interface StdioPaths {
  stdin: string;
  stdout: string;
  stderr: string;
  terminal: boolean;
}

/** Opened stdio of one process. */
export interface ProcessIo {
  stdin?: ReadableStream<Uint8Array>;
  stdout: WritableStream<Uint8Array>;
  stderr: WritableStream<Uint8Array>;
  /** Ends stdin (CloseIO, or the process exited). */
  closeStdin(): void;
  /** Appends a message to stderr (or stdout in terminal mode) — for errors nerdbox reports. */
  report(text: string): Promise<void>;
  /** Waits until everything written so far reached the files. */
  drained(): Promise<void>;
  /** Closes every file. Idempotent. */
  close(): Promise<void>;
}

/** Thrown for a stdio URI the shim cannot serve. */
export class StdioError extends Error {
  /** Builds the error. */
  constructor(message: string) {
    super(message);
    this.name = "StdioError";
  }
}

class OutputFile {
  #file?: Deno.FsFile;
  #tail: Promise<void> = Promise.resolve();
  #broken = false;

  constructor(file?: Deno.FsFile) {
    this.#file = file;
  }

  write(bytes: Uint8Array): Promise<void> {
    const file = this.#file;
    if (!file || this.#broken) return Promise.resolve();
    const copy = bytes.slice();
    this.#tail = this.#tail.then(async () => {
      try {
        let off = 0;
        while (off < copy.length) off += await file.write(copy.subarray(off));
      } catch {
        this.#broken = true; // reader gone: drop the rest, as a closed terminal would
      }
    });
    return this.#tail;
  }

  drained(): Promise<void> {
    return this.#tail;
  }

  stream(): WritableStream<Uint8Array> {
    return new WritableStream<Uint8Array>({
      write: (chunk) => this.write(chunk),
      close: () => this.drained(),
      abort: () => this.drained(),
    });
  }

  async close(): Promise<void> {
    await this.#tail;
    const f = this.#file;
    this.#file = undefined;
    try {
      f?.close();
    } catch { /* closed */ }
  }
}

async function openOutput(uri: string): Promise<Deno.FsFile | undefined> {
  if (uri === "") return undefined;
  if (uri.startsWith("binary://")) {
    throw new StdioError(`stdio URI ${JSON.stringify(uri)}: binary:// loggers are not supported`);
  }
  if (uri.startsWith("file://")) {
    const path = new URL(uri).pathname;
    return await Deno.open(path, { write: true, append: true, create: true });
  }
  if (!uri.startsWith("/")) {
    throw new StdioError(`stdio path ${JSON.stringify(uri)}: expected an absolute path or file://`);
  }
  const st = await Deno.stat(uri);
  if (st.isFifo) return await Deno.open(uri, { read: true, write: true });
  return await Deno.open(uri, { write: true, append: true });
}

class InputFifo {
  #path: string;
  #file?: Deno.FsFile;
  #closed = false;
  #opening: Promise<Deno.FsFile | undefined>;

  constructor(path: string) {
    this.#path = path;
    this.#opening = Deno.open(path, { read: true }).then((f) => {
      if (this.#closed) {
        f.close();
        return undefined;
      }
      this.#file = f;
      return f;
    }, () => undefined);
  }

  stream(): ReadableStream<Uint8Array> {
    let reader: ReadableStreamDefaultReader<Uint8Array> | undefined;
    return new ReadableStream<Uint8Array>({
      pull: async (ctrl) => {
        if (!reader) {
          const f = await this.#opening;
          if (!f || this.#closed) return ctrl.close();
          reader = f.readable.getReader();
        }
        try {
          const { value, done } = await reader.read();
          if (done || this.#closed) ctrl.close();
          else ctrl.enqueue(value);
        } catch {
          ctrl.close();
        }
      },
      cancel: () => this.close(),
    });
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (!this.#file) {
      // The read-open is still blocked: open the write end ourselves to let it finish.
      Deno.open(this.#path, { write: true }).then((w) => w.close(), () => {});
    } else {
      try {
        this.#file.close();
      } catch { /* closed */ }
    }
  }
}

/** Opens a process's stdio. On failure nothing stays open. */
export async function openProcessIo(paths: StdioPaths): Promise<ProcessIo> {
  const opened: Deno.FsFile[] = [];
  try {
    const outFile = await openOutput(paths.stdout);
    if (outFile) opened.push(outFile);
    const errFile = paths.terminal ? undefined : await openOutput(paths.stderr);
    if (errFile) opened.push(errFile);
    const out = new OutputFile(outFile);
    const err = paths.terminal ? out : new OutputFile(errFile);
    let input: InputFifo | undefined;
    if (paths.stdin !== "") {
      if (!paths.stdin.startsWith("/")) {
        throw new StdioError(
          `stdin path ${JSON.stringify(paths.stdin)}: expected an absolute path`,
        );
      }
      input = new InputFifo(paths.stdin);
    }
    let closed = false;
    return {
      ...(input ? { stdin: input.stream() } : {}),
      stdout: out.stream(),
      stderr: err.stream(),
      closeStdin: () => input?.close(),
      report: (text) => err.write(new TextEncoder().encode(text)),
      drained: async () => {
        await out.drained();
        await err.drained();
      },
      close: async () => {
        if (closed) return;
        closed = true;
        input?.close();
        await out.close();
        await err.close();
      },
    };
  } catch (e) {
    for (const f of opened) {
      try {
        f.close();
      } catch { /* closed */ }
    }
    throw e;
  }
}
