/**
 * Host side of the guest control channel (lib/guest_protocol.ts), backend-neutral: both the
 * libkrun and the QEMU backend hand it the connected `nerdbox.ctl` stream. It waits for HELLO,
 * sends CONFIG, forwards stdin and signals, copies STDOUT/STDERR and maps EXIT/ERROR to a VmExit.
 * The same channel multiplexes processes started later with EXEC frames (`exec`): each has its
 * own frame process id, stdio, stdin pump and exit. The CONFIG is built by lib/vm/guest_config.ts,
 * ERROR payloads are mapped by lib/vm/guest_error.ts. One file over ~400 lines: GuestChannel is one
 * class, the single reader whose frame loop every session's state is part of.
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
  GUEST_WORKLOAD_ID,
  type GuestCgroupStats,
  type GuestConfig,
  type GuestError,
  type GuestNetworkReport,
  type GuestProcess,
  type GuestQuery,
  type GuestReply,
  MsgType,
} from "../guest_protocol.ts";
import type { ProcessSpec } from "../spec/types.ts";
import { OutputQueue } from "./output_queue.ts";
import { guestErrorExit, GuestExecError, printable } from "./guest_error.ts";
import type { VmExit, VmHandle, VmProcess, VmStdio } from "./types.ts";

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

/** How long the guest may take to answer a QUERY. */
const QUERY_TIMEOUT_MS = 10_000;

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

/** The host-side state of one guest process (0 = the init workload). */
interface Session {
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
function exitCode(payload: Uint8Array): number | undefined {
  const { code } = decodeJson<{ code?: unknown }>(payload);
  return typeof code === "number" && Number.isInteger(code) && code >= 0 && code <= 255
    ? code
    : undefined;
}

/** `exit` with the EXIT payload's OOM verdict added when the guest reported one. */
function withOom(exit: VmExit, payload: Uint8Array): VmExit {
  return decodeJson<{ oomKilled?: unknown }>(payload).oomKilled === true
    ? { ...exit, oomKilled: true }
    : exit;
}

function checkSignal(signo: number): void {
  if (!Number.isInteger(signo) || signo < 1 || signo > 64) {
    throw new Error(`signal ${signo}: expected a signal number 1-64`);
  }
}

function checkSize(cols: number, rows: number): void {
  for (const [name, v] of [["cols", cols], ["rows", rows]] as const) {
    if (!Number.isInteger(v) || v < 0 || v > 0xffff) {
      throw new Error(`resize: ${name} ${v}: expected an integer 0-65535`);
    }
  }
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
  #queries = new Map<number, PromiseWithResolvers<GuestReply>>();
  #nextQuery = 1;

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
    // The workload's output is never dropped: a full queue stops the reader (back-pressure into
    // the guest). An exec'd process's consumer must not stall the others: its excess is dropped.
    // A forwarded connection (`dial`) is a byte stream that must stay whole: it waits too.
    const policy = id === 0 || lossless ? "wait" : "drop";
    const s: Session = {
      id,
      out: new OutputQueue(stdio.stdout, this.#outputLimit, policy),
      err: new OutputQueue(stdio.stderr, this.#outputLimit, policy),
      ended: false,
      started: Promise.withResolvers<number>(),
      exited: Promise.withResolvers<VmExit>(),
    };
    s.started.promise.catch(() => {}); // observed by exec; unobserved for the workload
    this.#procs.set(id, s);
    return s;
  }

  /** Ends a session: stops its stdin, writes out its output, then settles its promises. */
  async #finish(s: Session, exit: VmExit): Promise<void> {
    if (s.ended) return;
    s.ended = true;
    this.#procs.delete(s.id);
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
  #execExit(s: Session, payload: Uint8Array): VmExit {
    const code = exitCode(payload);
    if (code === undefined) {
      return { code: 125, error: `guest reported an invalid exit status for process ${s.id}` };
    }
    return s.error
      ? { code, error: guestErrorExit({ ...s.error, code }).error }
      : withOom({ code }, payload);
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
          this.#queries.get(f.proc)?.resolve(decodeJson<GuestReply>(f.payload));
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
            void this.#finish(s, this.#execExit(s, f.payload));
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
    for (const p of this.#queries.values()) p.reject(new Error("the VM ended"));
    this.#queries.clear();
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

  /**
   * Asks guest init `query` (QUERY frame) and resolves with its REPLY; rejects with the guest's
   * reason, when the session is over, or after QUERY_TIMEOUT_MS.
   */
  async #query(query: GuestQuery): Promise<GuestReply> {
    if (!(await this.#configured.promise) || this.sessionOver) {
      throw new Error(`${query.kind}: the guest is not running`);
    }
    const id = this.#nextQuery++;
    const reply = Promise.withResolvers<GuestReply>();
    this.#queries.set(id, reply);
    const timer = setTimeout(
      () =>
        reply.reject(
          new Error(`${query.kind}: the guest did not answer in ${QUERY_TIMEOUT_MS} ms`),
        ),
      QUERY_TIMEOUT_MS,
    );
    try {
      await this.#writer.write(encodeJsonFrame(MsgType.QUERY, id, query));
      const r = await reply.promise;
      if ("error" in r) throw new Error(printable(String(r.error)));
      return r;
    } finally {
      clearTimeout(timer);
      this.#queries.delete(id);
    }
  }

  /** The cgroup counters of container `container` of the VM (crun mode; default: its first). */
  async stats(container: string = GUEST_WORKLOAD_ID): Promise<GuestCgroupStats> {
    const r = await this.#query({ kind: "stats", container });
    if (!("stats" in r) || typeof r.stats !== "object" || r.stats === null) {
      throw new Error("stats: the guest's reply has no stats");
    }
    return r.stats;
  }

  /** The TCP ports something in the VM's network namespace listens on. */
  async listening(): Promise<number[]> {
    const r = await this.#query({ kind: "listening" });
    if (!("listening" in r) || !Array.isArray(r.listening)) {
      throw new Error("listening: the guest's reply has no ports");
    }
    return r.listening.filter((p) => Number.isInteger(p) && p > 0 && p <= 65535);
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

/**
 * The VmHandle `exec` and `resize` of a backend whose channel becomes available through `ready`
 * (undefined when the guest never connected).
 */
export function channelHandleOps(
  ready: Promise<GuestChannel | undefined>,
): Required<Pick<VmHandle, "exec" | "resize" | "stats" | "listening">> {
  return {
    async exec(process: ProcessSpec, stdio: VmStdio, target?: ExecTarget): Promise<VmProcess> {
      const c = await ready;
      if (!c) {
        await stdio.stdout.close().catch(() => {});
        await stdio.stderr.close().catch(() => {});
        throw new Error("exec: the VM is not running");
      }
      return await c.exec(process, stdio, target);
    },
    async resize(cols: number, rows: number): Promise<void> {
      checkSize(cols, rows);
      const c = await ready;
      if (c) await c.resize(cols, rows);
    },
    async stats(container?: string): Promise<GuestCgroupStats> {
      const c = await ready;
      if (!c) throw new Error("stats: the VM is not running");
      return await c.stats(container);
    },
    async listening(): Promise<number[]> {
      const c = await ready;
      if (!c) throw new Error("listening: the VM is not running");
      return await c.listening();
    },
  };
}
