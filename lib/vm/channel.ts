/**
 * Host side of the guest control channel (lib/guest_protocol.ts), backend-neutral: both the
 * libkrun and the QEMU backend hand it the connected `nerdbox.ctl` stream. It waits for HELLO,
 * sends CONFIG, forwards stdin and signals, copies STDOUT/STDERR and maps EXIT/ERROR to a VmExit.
 */
import {
  decodeJson,
  encodeFrame,
  encodeJsonFrame,
  type Frame,
  FrameDecoder,
  GUEST_EXIT,
  GUEST_PROTOCOL_VERSION,
  type GuestConfig,
  type GuestError,
  type GuestNetworkReport,
  type GuestRootfs,
  MsgType,
} from "../guest_protocol.ts";
import type { VmExit, VmPlan, VmStdio } from "./types.ts";

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

/** Builds the GuestConfig for a plan (the guest finds its rootfs as `rootfs` says). */
export function buildGuestConfig(plan: VmPlan, rootfs: GuestRootfs): GuestConfig {
  const networks = plan.network.kind === "nics"
    ? plan.network.nics.map((n) => ({
      mac: n.mac,
      dhcp: n.dhcp,
      addrs: [...n.addrs],
      defaultRoute: n.defaultRoute,
      ...(n.gateway4 ? { gateway4: n.gateway4 } : {}),
    }))
    : [];
  return {
    version: GUEST_PROTOCOL_VERSION,
    hostname: plan.hostname,
    rootfs,
    process: {
      args: [...plan.process.args],
      env: [...plan.process.env],
      cwd: plan.process.cwd,
      uid: plan.process.uid,
      gid: plan.process.gid,
      terminal: plan.process.terminal,
    },
    networks,
    ...(plan.dns ? { dns: plan.dns } : {}),
    dhcpTimeoutMs: 15_000,
  };
}

/** Maps a guest ERROR payload to the VmExit nerdbox reports (distinct status per kind). */
export function guestErrorExit(err: GuestError): VmExit {
  const code = Number.isInteger(err.code) && err.code! >= 0 && err.code! <= 255
    ? err.code!
    : GUEST_EXIT[err.kind] ?? 125;
  return { code, error: `guest init: ${err.kind}: ${err.message}` };
}

/** The host end of one VM's control channel. Single reader: iterate frames or call `run`. */
export class GuestChannel {
  #stream: ChannelStream;
  #writer: WritableStreamDefaultWriter<Uint8Array>;
  #closed = false;
  #hello = false;
  #ended = false;
  #stdinReader?: ReadableStreamDefaultReader<Uint8Array>;

  /** Whether the guest said HELLO (its init is up). */
  get helloSeen(): boolean {
    return this.#hello;
  }

  /** Whether the guest ended the session itself (EXIT or ERROR frame). */
  get guestEnded(): boolean {
    return this.#ended;
  }

  /** Wraps a connected stream (the `nerdbox.ctl` port). */
  constructor(stream: ChannelStream) {
    this.#stream = stream;
    this.#writer = stream.writable.getWriter();
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

  /**
   * Runs the init workload's session: waits for HELLO, sends `config`, copies stdin to the guest
   * and STDOUT/STDERR to `stdio`, and resolves with the workload's exit (EXIT), the guest's
   * setup failure (ERROR) or a channel error (the stream ended first). Closes stdio's writers.
   */
  async run(config: GuestConfig, stdio: VmStdio, events: ChannelEvents = {}): Promise<VmExit> {
    const out = stdio.stdout.getWriter();
    const err = stdio.stderr.getWriter();
    let stdinPump: Promise<void> | undefined;
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
          // Without stdin the workload reads EOF at once.
          stdinPump = stdio.stdin ? this.#pumpStdin(stdio.stdin) : this.sendStdinEof();
        } else if (f.proc !== 0) {
          continue; // exec'd processes are not handled by this session
        } else if (f.type === MsgType.STDOUT) {
          await out.write(f.payload);
        } else if (f.type === MsgType.STDERR) {
          await err.write(f.payload);
        } else if (f.type === MsgType.EXIT) {
          this.#ended = true;
          const { code } = decodeJson<{ code: number }>(f.payload);
          result = Number.isInteger(code) && code >= 0 && code <= 255
            ? { code }
            : { code: 125, error: `guest reported an invalid exit status ${JSON.stringify(code)}` };
          break;
        } else if (f.type === MsgType.ERROR) {
          this.#ended = true;
          result = guestErrorExit(decodeJson<GuestError>(f.payload));
          break;
        } else if (f.type === MsgType.LOG) {
          events.onLog?.(new TextDecoder().decode(f.payload));
        } else if (f.type === MsgType.NETWORK) {
          events.onNetwork?.(decodeJson<GuestNetworkReport>(f.payload));
        } else if (f.type === MsgType.STARTED) {
          events.onStarted?.(decodeJson<{ pid: number }>(f.payload).pid);
        }
      }
    } catch (e) {
      result = { code: 125, error: `guest channel: ${(e as Error).message}` };
    } finally {
      await out.close().catch(() => {});
      await err.close().catch(() => {});
    }
    void stdinPump?.catch(() => {});
    return result ?? { code: 125, error: "the guest channel closed before the workload exited" };
  }

  async #pumpStdin(stdin: ReadableStream<Uint8Array>): Promise<void> {
    const reader = stdin.getReader();
    this.#stdinReader = reader;
    try {
      while (!this.#closed) {
        const { value, done } = await reader.read();
        if (done) break;
        if (this.#closed) return;
        await this.sendStdin(value);
      }
      if (!this.#closed) await this.sendStdinEof();
    } finally {
      this.#stdinReader = undefined;
      reader.releaseLock();
    }
  }

  /** Closes the channel (idempotent). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    // Stop reading stdin (a terminal would otherwise keep the caller alive).
    void this.#stdinReader?.cancel().catch(() => {});
    this.#writer.releaseLock();
    try {
      this.#stream.close();
    } catch {
      // already closed
    }
  }
}
