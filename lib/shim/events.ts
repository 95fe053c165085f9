/**
 * Task events to containerd: `containerd.services.events.ttrpc.v1.Events/Forward` on TTRPC_ADDRESS,
 * one connection, a bounded queue, a few retries; the Any carries the bare type name
 * (`containerd.events.TaskExit`) that containerd 1.6 resolves, and the envelope a real timestamp.
 */
import { create, type DescMessage, type MessageShape, toBinary } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { ForwardRequestSchema } from "./proto/gen/containerd/ttrpc_events_pb.ts";
import { TtrpcClient } from "./ttrpc.ts";

const SERVICE = "containerd.services.events.ttrpc.v1.Events";
const MAX_QUEUE = 2048;
const ATTEMPTS = 5;
const CALL_TIMEOUT_MS = 5000;

/** Where publish failures are reported. */
export type EventLogger = (message: string) => void;

/** Publishes events in order, in the background. */
export class EventPublisher {
  #address: string;
  #namespace: string;
  #log: EventLogger;
  #queue: Uint8Array[] = [];
  #client?: TtrpcClient;
  #running?: Promise<void>;

  /** `address` is containerd's ttrpc socket (TTRPC_ADDRESS); "" disables publishing. */
  constructor(address: string, namespace: string, log: EventLogger) {
    this.#address = address;
    this.#namespace = namespace;
    this.#log = log;
  }

  /** Queues one event; `schema` is its message type (its typeName becomes the Any type URL). */
  publish<D extends DescMessage>(topic: string, schema: D, event: MessageShape<D>): void {
    if (!this.#address) return;
    if (this.#queue.length >= MAX_QUEUE) {
      this.#log(`event queue full: dropping ${topic}`);
      return;
    }
    const req = create(ForwardRequestSchema, {
      envelope: {
        timestamp: timestampFromDate(new Date()),
        namespace: this.#namespace,
        topic,
        event: { typeUrl: schema.typeName, value: toBinary(schema, event) },
      },
    });
    this.#queue.push(toBinary(ForwardRequestSchema, req));
    this.#running ??= this.#drain().finally(() => this.#running = undefined);
  }

  /** Resolves once every queued event was sent (or given up on), or after `timeoutMs`. */
  async flush(timeoutMs = 5000): Promise<void> {
    if (!this.#running) return;
    await Promise.race([this.#running, new Promise((r) => setTimeout(r, timeoutMs))]);
  }

  /** Closes the connection. */
  close(): void {
    this.#client?.close();
    this.#client = undefined;
  }

  async #drain(): Promise<void> {
    while (this.#queue.length > 0) {
      const payload = this.#queue[0];
      let sent = false;
      for (let attempt = 0; attempt < ATTEMPTS && !sent; attempt++) {
        try {
          this.#client ??= await TtrpcClient.connect(this.#address);
          await this.#client.call(SERVICE, "Forward", payload, { timeoutMs: CALL_TIMEOUT_MS });
          sent = true;
        } catch (err) {
          this.#client?.close();
          this.#client = undefined;
          if (attempt === ATTEMPTS - 1) {
            this.#log(`publishing an event failed: ${err instanceof Error ? err.message : err}`);
          } else await new Promise((r) => setTimeout(r, 100 * 2 ** attempt));
        }
      }
      this.#queue.shift();
    }
  }
}
