/**
 * The VmHandle methods a backend offers over its guest channel (lib/vm/channel.ts): exec, resize
 * and the QUERY-backed stats, listening ports, resource update and pids.
 */
import type { ExecTarget, GuestCgroupStats } from "../guest_protocol.ts";
import type { ResourcesUpdate } from "../linux_resources.ts";
import type { ProcessSpec } from "../spec/types.ts";
import type { GuestChannel } from "./channel.ts";
import { checkSize } from "./channel_session.ts";
import { GuestQueryError } from "./channel_queries.ts";
import type { VmHandle, VmProcess, VmStdio } from "./types.ts";

/** The channel-backed VmHandle methods of a backend whose channel comes through `ready`. */
export type ChannelHandleOps = Required<
  Pick<VmHandle, "exec" | "resize" | "stats" | "listening" | "update" | "pids">
>;

/**
 * The VmHandle `exec`, `resize` and queries of a backend whose channel becomes available through
 * `ready` (undefined when the guest never connected).
 */
export function channelHandleOps(ready: Promise<GuestChannel | undefined>): ChannelHandleOps {
  const channel = async (what: string): Promise<GuestChannel> => {
    const c = await ready;
    if (!c) throw new GuestQueryError("not_running", `${what}: the VM is not running`);
    return c;
  };
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
      return await (await channel("stats")).stats(container);
    },
    async listening(): Promise<number[]> {
      return await (await channel("listening")).listening();
    },
    async update(resources: ResourcesUpdate, container?: string): Promise<void> {
      return await (await channel("update")).update(resources, container);
    },
    async pids(container?: string): Promise<number[]> {
      return await (await channel("pids")).pids(container);
    },
  };
}
