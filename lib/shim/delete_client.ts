/**
 * Used by the `delete` command when the group's daemon is still alive: asks it to kill and forget
 * one container (errors such as NotFound mean it is already gone).
 */
import { create, toBinary } from "@bufbuild/protobuf";
import {
  DeleteRequestSchema,
  KillRequestSchema,
  WaitRequestSchema,
} from "./proto/gen/containerd/shim_pb.ts";
import { TtrpcClient } from "./ttrpc.ts";

const TASK = "containerd.task.v2.Task";

/** Kill(SIGKILL, all) → Wait → Delete for `id` on the daemon at `socket`; errors are ignored. */
export async function deleteViaDaemon(socket: string, id: string): Promise<void> {
  const client = await TtrpcClient.connect(socket);
  try {
    await client.call(
      TASK,
      "Kill",
      toBinary(KillRequestSchema, create(KillRequestSchema, { id, signal: 9, all: true })),
      { timeoutMs: 5000 },
    ).catch(() => {});
    await client.call(
      TASK,
      "Wait",
      toBinary(WaitRequestSchema, create(WaitRequestSchema, { id })),
      { timeoutMs: 10_000 },
    ).catch(() => {});
    await client.call(
      TASK,
      "Delete",
      toBinary(DeleteRequestSchema, create(DeleteRequestSchema, { id })),
      { timeoutMs: 10_000 },
    ).catch(() => {});
  } finally {
    client.close();
  }
}
