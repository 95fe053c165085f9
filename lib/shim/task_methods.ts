/**
 * The ttrpc method table of the containerd Task service: decodes each request, calls the
 * TaskService method and encodes its answer; methods nerdbox cannot offer answer UNIMPLEMENTED.
 */
import {
  create,
  type DescMessage,
  fromBinary,
  type MessageShape,
  toBinary,
} from "@bufbuild/protobuf";
import { EmptySchema } from "@bufbuild/protobuf/wkt";
import * as pb from "./proto/gen/containerd/shim_pb.ts";
import { type CallContext, Code, TtrpcError, type TtrpcServer } from "./ttrpc.ts";
import type { TaskService } from "./task_service.ts";

/** The wire name of the service. */
export const TASK_SERVICE = "containerd.task.v2.Task";

/** Registers every Task method of `svc` on `server`. */
export function registerTaskMethods(server: TtrpcServer, svc: TaskService): void {
  const on = <I extends DescMessage, O extends DescMessage>(
    method: string,
    inSchema: I,
    outSchema: O,
    fn: (req: MessageShape<I>, ctx: CallContext) => Promise<MessageShape<O>>,
  ) => {
    server.register(TASK_SERVICE, method, async (payload, ctx) => {
      const req = fromBinary(inSchema, payload);
      const res = await fn(req, ctx);
      return toBinary(outSchema, res);
    });
  };
  const empty = create(EmptySchema);
  on("Create", pb.CreateTaskRequestSchema, pb.CreateTaskResponseSchema, (r) => svc.create(r));
  on("Start", pb.StartRequestSchema, pb.StartResponseSchema, (r) => svc.start(r));
  on("Wait", pb.WaitRequestSchema, pb.WaitResponseSchema, (r, ctx) => svc.wait(r, ctx));
  on("Kill", pb.KillRequestSchema, EmptySchema, async (r) => (await svc.kill(r), empty));
  on("Delete", pb.DeleteRequestSchema, pb.DeleteResponseSchema, (r) => svc.delete(r));
  on("State", pb.StateRequestSchema, pb.StateResponseSchema, (r) => svc.state(r));
  on("Pids", pb.PidsRequestSchema, pb.PidsResponseSchema, (r) => svc.pids(r));
  on("Stats", pb.StatsRequestSchema, pb.StatsResponseSchema, (r) => svc.stats(r));
  on("Update", pb.UpdateTaskRequestSchema, EmptySchema, async (r) => (await svc.update(r), empty));
  on("Connect", pb.ConnectRequestSchema, pb.ConnectResponseSchema, (r) => svc.connect(r));
  on("Shutdown", pb.ShutdownRequestSchema, EmptySchema, (r) => {
    svc.shutdown(r);
    return Promise.resolve(empty);
  });
  on("CloseIO", pb.CloseIORequestSchema, EmptySchema, (r) => {
    svc.closeIO(r);
    return Promise.resolve(empty);
  });
  on("ResizePty", pb.ResizePtyRequestSchema, EmptySchema, async (r) => {
    await svc.resizePty(r);
    return empty;
  });
  on("Exec", pb.ExecProcessRequestSchema, EmptySchema, async (r) => {
    await svc.exec(r);
    return empty;
  });
  const unimplemented = (method: string, why: string) =>
    server.register(TASK_SERVICE, method, () => {
      throw new TtrpcError(Code.UNIMPLEMENTED, `${method}: ${why}`);
    });
  unimplemented("Pause", "nerdbox cannot pause a microVM's workload");
  unimplemented("Resume", "nerdbox cannot pause a microVM's workload");
  unimplemented("Checkpoint", "nerdbox does not checkpoint microVMs");
}
