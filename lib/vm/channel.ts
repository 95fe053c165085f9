/**
 * Host side of the guest control channel (lib/guest_protocol.ts), backend-neutral: both the
 * libkrun and the QEMU backend hand it the connected `nerdbox.ctl` stream. It waits for HELLO,
 * sends CONFIG, forwards stdin and signals, copies STDOUT/STDERR and maps EXIT/ERROR to a VmExit.
 * The same channel multiplexes processes started later with EXEC frames (`exec`): each has its
 * own frame process id, stdio, stdin pump and exit. The CONFIG is built by lib/vm/guest_config.ts,
 * ERROR payloads are mapped by lib/vm/guest_error.ts, QUERY/REPLY exchanges live in
 * lib/vm/channel_queries.ts, the VmHandle methods over a channel in lib/vm/channel_handle.ts.
 */
import {
  decodeJson,
  encodeFrame,
  encodeJsonFrame,
  type ExecRequest,
  type ExecTarget,
  type Frame,
  FrameDecoder,
  GUEST_PROTOCOL_VERSION,
  type GuestCgroupStats,
  type GuestConfig,
  type GuestError,
  type GuestNetworkReport,
  type GuestProcess,
  type GuestReply,
  MsgType,
} from "../guest_protocol.ts";
import type { ResourcesUpdate } from "../linux_resources.ts";
import { guestErrorExit } from "./guest_error.ts";
import {
  checkSignal,
  checkSize,
  execExit,
  exitCode,
  finishSession,
  openSession,
  type Session,
  withOom,
} from "./channel_session.ts";
import { GuestQueries } from "./channel_queries.ts";
import type { VmExit, VmProcess, VmStdio } from "./types.ts";

/** The byte stream the channel runs over (a Deno.Conn, or any duplex with the same shape). */
export interface ChannelStream {
  readonly readable: ReadableStream<Uint8Array>;
  readonly writable: WritableStream<Uint8Array>;
  close(): void;
}

/** What `GuestChannel.run` reports besides the exit. */
export interface ChannelEvents {
  /** Called with each guest init log line (LOG frames). */
  onLog?: (line: string) => void;
  /** Called once the guest reports its network (NETWORK frame). */
  onNetwork?: (report: GuestNetworkReport) => void;
  /** Called when the workload started (STARTED frame). */
  onStarted?: (pid: number) => void;
}

/** Largest stdin chunk put into one STDIN frame. */
const STDIN_CHUNK = 64 * 1024;

/** Options of a GuestChannel. */
export interface GuestChannelOptions {
  /** Bound (bytes) of each process stream's queued output; see OutputQueue. */
  outputLimit?: number;
}

/** A process started in the guest by `GuestChannel.exec`. */
export interface ChannelProcess extends VmProcess {
  /** The process id used in frame headers. */
  readonly id: number;
  /** Resizes the process's terminal (RESIZE frame); a no-op once it exited. */
  resize(cols: number, rows: number): Promise<void>;
  /** Output bytes dropped so far because a consumer fell too far behind. */
  dropped(): number;
}

/**
 * The host end of one VM's control channel. `run` is the single reader: it drives the init
 * workload's session and routes every other process's frames (started by `exec`) to that
 * process's own stdio and exit, each stream through its own bounded queue (OutputQueue): an exec'd
 * process's slow consumer never stalls the others (beyond the bound its output is dropped, and a
 * note says so on its stderr); the workload's output is never dropped (a full queue stops the
 * reader, i.e. back-pressure into the guest).
 */
export class GuestChannel {
  #stream: ChannelStream;
  #writer: WritableStreamDefaultWriter<Uint8Array>;
  #closed = false;
  #hello = false;
  #ended = false;
  #over = false;
  #configured = Promise.withResolvers<boolean>();
  #procs = new Map<number, Session>();
  #nextId = 1;
  #stdinReaders = new Set<ReadableStreamDefaultReader<Uint8Array>>();
  #outputLimit?: number;
  #queries: GuestQueries;

  /** Whether the guest said HELLO (its init is up). */
  get helloSeen(): boolean {
    return this.#hello;
  }

  /** Whether the guest ended the session itself (EXIT or ERROR frame). */
  get guestEnded(): boolean {
    return this.#ended;
  }

  /** Whether the session is over (the workload exited, the guest failed, or the stream ended). */
  get sessionOver(): boolean {
    return this.#over || this.#closed;
  }

  /** Wraps a connected stream (the `nerdbox.ctl` port). */
  constructor(stream: ChannelStream, opts: GuestChannelOptions = {}) {
    this.#stream = stream;
    this.#writer = stream.writable.getWriter();
    this.#outputLimit = opts.outputLimit;
    this.#queries = new GuestQueries(
      (id, query) => this.#writer.write(encodeJsonFrame(MsgType.QUERY, id, query)),
      async () => (await this.#configured.promise) && !this.sessionOver,
    );
  }

  /** Resolves true once CONFIG was sent, false if the session ended before that. */
  configured(): Promise<boolean> {
    return this.#configured.promise;
  }

  /** Sends one raw frame. */
  async send(type: number, proc: number, payload: Uint8Array): Promise<void> {
    await this.#writer.write(encodeFrame(type, proc, payload));
  }

  /** Sends the guest configuration (the first host→guest message). */
  async sendConfig(config: GuestConfig): Promise<void> {
    await this.#writer.write(encodeJsonFrame(MsgType.CONFIG, 0, config));
  }

  /** Sends stdin bytes for a process (split into bounded frames). */
  async sendStdin(data: Uint8Array, proc = 0): Promise<void> {
    for (let off = 0; off < data.length; off += STDIN_CHUNK) {
      await this.send(MsgType.STDIN, proc, data.subarray(off, off + STDIN_CHUNK));
    }
  }

  /** Tells the guest the process's stdin is closed. */
  async sendStdinEof(proc = 0): Promise<void> {
    await this.send(MsgType.STDIN_EOF, proc, new Uint8Array(0));
  }

  /** Delivers a signal to a process in the guest. */
  async sendSignal(signo: number, proc = 0): Promise<void> {
    await this.#writer.write(encodeJsonFrame(MsgType.SIGNAL, proc, { signo }));
  }

  /** Tells the guest the terminal size changed. */
  async sendResize(cols: number, rows: number, proc = 0): Promise<void> {
    await this.#writer.write(encodeJsonFrame(MsgType.RESIZE, proc, { cols, rows }));
  }

  /** Decoded guest→host frames until the stream ends. */
  async *frames(): AsyncGenerator<Frame> {
    const decoder = new FrameDecoder();
    const reader = this.#stream.readable.getReader();
    try {
      while (true) {
        const { value, done } = await reader.read();
        if (done) return;
        for (const f of decoder.push(value)) yield f;
      }
    } finally {
      reader.releaseLock();
    }
  }

  #open(id: number, stdio: VmStdio, lossless = false): Session {
    const s = openSession(id, stdio, this.#outputLimit, lossless);
    this.#procs.set(id, s);
    return s;
  }

  /** Ends a session (see finishSession) and forgets it. */
  async #finish(s: Session, exit: VmExit): Promise<void> {
    if (s.ended) return;
    this.#procs.delete(s.id);
    await finishSession(s, exit);
  }

  /**
   * Runs the init workload's session: waits for HELLO, sends `config`, copies stdin to the guest
   * and STDOUT/STDERR to `stdio`, and resolves with the workload's exit (EXIT), the guest's
   * setup failure (ERROR) or a channel error (the stream ended first). Closes stdio's writers.
   * Frames of exec'd processes are routed to them meanwhile; those still running when the
   * session ends exit with 137 and an error.
   */
  async run(config: GuestConfig, stdio: VmStdio, events: ChannelEvents = {}): Promise<VmExit> {
    const init = this.#open(0, stdio);
    let result: VmExit | undefined;
    try {
      for await (const f of this.frames()) {
        if (f.type === MsgType.HELLO) {
          this.#hello = true;
          const hello = decodeJson<{ version?: number }>(f.payload);
          if (hello.version !== GUEST_PROTOCOL_VERSION) {
            result = {
              code: 125,
              error:
                `guest speaks protocol version ${hello.version}, host ${GUEST_PROTOCOL_VERSION}`,
            };
            break;
          }
          await this.sendConfig(config);
          this.#configured.resolve(true);
          // Without stdin the workload reads EOF at once.
          const pump = stdio.stdin ? this.#pumpStdin(stdio.stdin, init) : this.sendStdinEof();
          void pump.catch(() => {});
          continue;
        }
        if (f.type === MsgType.LOG) {
          events.onLog?.(new TextDecoder().decode(f.payload));
          continue;
        }
        if (f.type === MsgType.NETWORK) {
          events.onNetwork?.(decodeJson<GuestNetworkReport>(f.payload));
          continue;
        }
        if (f.type === MsgType.REPLY) {
          this.#queries.reply(f.proc, decodeJson<GuestReply>(f.payload));
          continue;
        }
        const s = this.#procs.get(f.proc);
        if (!s) continue; // a process that already ended, or one the host never started
        if (f.type === MsgType.STDOUT) {
          await s.out.push(f.payload);
        } else if (f.type === MsgType.STDERR) {
          await s.err.push(f.payload);
        } else if (f.type === MsgType.STARTED) {
          const pid = decodeJson<{ pid: number }>(f.payload).pid;
          s.pid = pid;
          if (s.id === 0) events.onStarted?.(pid);
          else s.started.resolve(pid);
        } else if (f.type === MsgType.ERROR) {
          const err = decodeJson<GuestError>(f.payload);
          if (s.id !== 0) {
            s.error = err; // its EXIT follows
            continue;
          }
          this.#ended = true;
          result = guestErrorExit(err);
          break;
        } else if (f.type === MsgType.EXIT) {
          if (s.id !== 0) {
            void this.#finish(s, execExit(s, f.payload));
            continue;
          }
          this.#ended = true;
          const code = exitCode(f.payload);
          result = code !== undefined ? withOom({ code }, f.payload) : {
            code: 125,
            error: `guest reported an invalid exit status ${
              JSON.stringify(decodeJson<{ code?: unknown }>(f.payload).code)
            }`,
          };
          break;
        }
      }
    } catch (e) {
      result = { code: 125, error: `guest channel: ${(e as Error).message}` };
    }
    this.#over = true;
    this.#configured.resolve(false);
    result ??= { code: 125, error: "the guest channel closed before the workload exited" };
    this.#queries.endAll();
    for (const s of [...this.#procs.values()]) {
      if (s.id === 0) continue;
      void this.#finish(s, {
        code: s.pid === undefined ? 125 : 137,
        error: s.pid === undefined
          ? `the VM ended before process ${s.id} started`
          : `the VM ended (its workload exited) before process ${s.id} did`,
      });
    }
    await this.#finish(init, result);
    return result;
  }

  /**
   * Starts `process` in the running guest (EXEC frame with a fresh process id) once CONFIG was
   * sent, and resolves when the guest reports it STARTED; its stdin is then forwarded (EOF when
   * `stdio.stdin` is absent or ends). Rejects with a GuestExecError when the guest cannot start
   * it (its stdio writers are closed then too), or an Error when the session is over.
   */
  async exec(
    process: GuestProcess,
    stdio: VmStdio,
    target: ExecTarget = {},
  ): Promise<ChannelProcess> {
    const refuse = async (message: string): Promise<never> => {
      await stdio.stdout.close().catch(() => {});
      await stdio.stderr.close().catch(() => {});
      throw new Error(message);
    };
    if (!Array.isArray(process.args) || process.args.length === 0) {
      return await refuse("exec: process.args: expected at least one argument");
    }
    if (!(await this.#configured.promise) || this.sessionOver) {
      return await refuse(
        "exec: the guest is not running (its workload ended or it never started)",
      );
    }
    const id = this.#nextId++;
    const s = this.#open(id, stdio, target.dial !== undefined);
    const request: ExecRequest = {
      args: [...process.args],
      env: [...process.env],
      cwd: process.cwd,
      uid: process.uid,
      gid: process.gid,
      ...(process.additionalGids?.length ? { additionalGids: [...process.additionalGids] } : {}),
      terminal: process.terminal,
      ...(target.container ? { container: target.container } : {}),
      ...(target.in !== undefined ? { in: target.in } : {}),
      ...(target.guest ? { guest: true } : {}),
      ...(target.dial !== undefined ? { dial: target.dial } : {}),
    };
    try {
      await this.#writer.write(encodeJsonFrame(MsgType.EXEC, id, request));
    } catch (e) {
      const error = `exec: the guest channel failed: ${(e as Error).message}`;
      await this.#finish(s, { code: 125, error });
      throw new Error(error);
    }
    const pid = await s.started.promise;
    if (!s.ended) {
      const pump = stdio.stdin ? this.#pumpStdin(stdio.stdin, s) : this.sendStdinEof(id);
      void pump.catch(() => {});
    }
    return {
      id,
      pid,
      exited: s.exited.promise,
      signal: async (signo: number) => {
        checkSignal(signo);
        if (s.ended || this.sessionOver) return;
        await this.sendSignal(signo, id);
      },
      resize: async (cols: number, rows: number) => {
        checkSize(cols, rows);
        if (s.ended || this.sessionOver) return;
        await this.sendResize(cols, rows, id);
      },
      dropped: () => s.out.dropped + s.err.dropped,
    };
  }

  /** The cgroup counters of container `container` (crun mode; default: the VM's first). */
  stats(container?: string): Promise<GuestCgroupStats> {
    return this.#queries.stats(container);
  }

  /** The TCP ports something in the VM's network namespace listens on. */
  listening(): Promise<number[]> {
    return this.#queries.listening();
  }

  /** Applies `resources` to container `container` (`crun update` in the guest; default: first). */
  update(resources: ResourcesUpdate, container?: string): Promise<void> {
    return this.#queries.update(resources, container);
  }

  /** The guest pids in container `container`'s cgroup (crun mode; default: the VM's first). */
  pids(container?: string): Promise<number[]> {
    return this.#queries.pids(container);
  }

  /** Resizes the init workload's terminal once CONFIG was sent; a no-op after the session. */
  async resize(cols: number, rows: number): Promise<void> {
    checkSize(cols, rows);
    if (!(await this.#configured.promise) || this.sessionOver) return;
    await this.sendResize(cols, rows, 0);
  }

  async #pumpStdin(stdin: ReadableStream<Uint8Array>, s: Session): Promise<void> {
    const reader = stdin.getReader();
    s.stdin = reader;
    this.#stdinReaders.add(reader);
    try {
      while (!this.#closed && !s.ended) {
        const { value, done } = await reader.read();
        if (done) break;
        if (this.#closed || s.ended) return;
        await this.sendStdin(value, s.id);
      }
      if (!this.#closed && !s.ended) await this.sendStdinEof(s.id);
    } finally {
      this.#stdinReaders.delete(reader);
      reader.releaseLock();
    }
  }

  /** Closes the channel (idempotent). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#configured.resolve(false);
    // Stop reading stdin (a terminal would otherwise keep the caller alive).
    for (const r of this.#stdinReaders) void r.cancel().catch(() => {});
    this.#writer.releaseLock();
    try {
      this.#stream.close();
    } catch {
      // already closed
    }
  }
}
