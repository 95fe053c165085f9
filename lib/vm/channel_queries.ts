/**
 * The host's QUERY/REPLY exchanges with guest init (lib/guest_protocol.ts): each QUERY carries a
 * fresh id in its frame header and waits for the REPLY with the same id, the guest's error, the
 * session's end or a timeout. GuestChannel owns one and routes REPLY frames to it.
 */
import {
  GUEST_WORKLOAD_ID,
  type GuestCgroupStats,
  type GuestQuery,
  type GuestQueryFailure,
  type GuestReply,
} from "../guest_protocol.ts";
import type { ResourcesUpdate } from "../linux_resources.ts";
import { printable } from "./guest_error.ts";

/** How long the guest may take to answer a QUERY. */
const QUERY_TIMEOUT_MS = 10_000;

/** Why a QUERY failed: the guest's reason, or `timeout`, or `not_running` (no session). */
export type QueryFailure = GuestQueryFailure | "timeout" | "not_running";

/** A QUERY that got no answer; `reason` lets callers pick a status code. */
export class GuestQueryError extends Error {
  /** Builds the error with its `reason`. */
  constructor(readonly reason: QueryFailure, message: string) {
    super(message);
    this.name = "GuestQueryError";
  }
}

const REASONS: ReadonlySet<string> = new Set(["invalid", "not_found", "unsupported", "failed"]);

/** The QUERY side of one channel: `send` writes a QUERY frame, `live` says whether to try. */
export class GuestQueries {
  #pending = new Map<number, PromiseWithResolvers<GuestReply>>();
  #next = 1;

  /** `send` writes the QUERY frame `id`; `live` resolves false once the session is over. */
  constructor(
    readonly send: (id: number, query: GuestQuery) => Promise<void>,
    readonly live: () => Promise<boolean>,
  ) {}

  /** Settles the QUERY `id` with the REPLY payload `reply` (unknown ids are ignored). */
  reply(id: number, reply: GuestReply): void {
    this.#pending.get(id)?.resolve(reply);
  }

  /** Rejects every open QUERY: the VM ended. */
  endAll(): void {
    for (const p of this.#pending.values()) {
      p.reject(new GuestQueryError("not_running", "the VM ended"));
    }
    this.#pending.clear();
  }

  /**
   * Asks guest init `query` and resolves with its REPLY; rejects with the guest's reason, when
   * the session is over, or after QUERY_TIMEOUT_MS.
   */
  async ask(query: GuestQuery): Promise<GuestReply> {
    if (!(await this.live())) {
      throw new GuestQueryError("not_running", `${query.kind}: the guest is not running`);
    }
    const id = this.#next++;
    const reply = Promise.withResolvers<GuestReply>();
    this.#pending.set(id, reply);
    const timer = setTimeout(
      () =>
        reply.reject(
          new GuestQueryError(
            "timeout",
            `${query.kind}: the guest did not answer in ${QUERY_TIMEOUT_MS} ms`,
          ),
        ),
      QUERY_TIMEOUT_MS,
    );
    try {
      await this.send(id, query);
      const r = await reply.promise;
      if ("error" in r) {
        const reason = typeof r.reason === "string" && REASONS.has(r.reason) ? r.reason : "failed";
        throw new GuestQueryError(reason, printable(String(r.error)));
      }
      return r;
    } finally {
      clearTimeout(timer);
      this.#pending.delete(id);
    }
  }

  /** The cgroup counters of container `container` of the VM (crun mode; default: its first). */
  async stats(container: string = GUEST_WORKLOAD_ID): Promise<GuestCgroupStats> {
    const r = await this.ask({ kind: "stats", container });
    if (!("stats" in r) || typeof r.stats !== "object" || r.stats === null) {
      throw new Error("stats: the guest's reply has no stats");
    }
    return r.stats;
  }

  /** The TCP ports something in the VM's network namespace listens on. */
  async listening(): Promise<number[]> {
    const r = await this.ask({ kind: "listening" });
    if (!("listening" in r) || !Array.isArray(r.listening)) {
      throw new Error("listening: the guest's reply has no ports");
    }
    return r.listening.filter((p) => Number.isInteger(p) && p > 0 && p <= 65535);
  }

  /** Applies `resources` to container `container` (crun update in the guest; default: first). */
  async update(
    resources: ResourcesUpdate,
    container: string = GUEST_WORKLOAD_ID,
  ): Promise<void> {
    const r = await this.ask({ kind: "update", container, resources });
    if (!("updated" in r) || r.updated !== true) {
      throw new Error("update: the guest's reply does not confirm the update");
    }
  }

  /** The guest pids in container `container`'s cgroup (crun mode; default: the VM's first). */
  async pids(container: string = GUEST_WORKLOAD_ID): Promise<number[]> {
    const r = await this.ask({ kind: "pids", container });
    if (!("pids" in r) || !Array.isArray(r.pids)) {
      throw new Error("pids: the guest's reply has no pids");
    }
    return r.pids.filter((p) => Number.isInteger(p) && p > 0);
  }
}
