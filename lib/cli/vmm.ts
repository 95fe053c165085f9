/**
 * `nerdbox vmm REQUEST.json|-` (internal): the per-VM process. Reads and checks the request
 * (lib/vm/vmm_request.ts), loads libkrun, connects the guest control channel to the parent,
 * configures a fresh context (the same lib/vm/libkrun_calls.ts sequence `nerdbox run --dry-run`
 * shows) and enters krun_start_enter, which ends this process with the VM's status. Its own
 * failures are printed as `nerdbox vmm: …` lines and end it with 125.
 */
import { KrunArgumentError, KrunError } from "../../ffi/libkrun_errors.ts";
import { formatSpecError, SpecValidationError } from "../spec/types.ts";
import { loadLibkrun } from "../vm/libkrun_locate.ts";
import { connectUnixFd, dieWithParent, STOP_BEFORE_START_ENV } from "../vm/libkrun.ts";
import { configureContext, DEFAULT_VMM_LOG_LEVEL } from "../vm/libkrun_calls.ts";
import { parseVmmRequest, type VmmRequest } from "../vm/vmm_request.ts";
import { guardTsiListeners } from "../vm/tsi_guard.ts";

const USAGE = `Usage: nerdbox vmm REQUEST.json|-

Internal: runs one VM under libkrun in this process (krun_start_enter never returns).
REQUEST is the JSON nerdbox run / the shim writes (plan, guest program, channel socket);
"-" reads it from stdin. Exit status: the VM's; 125 when nerdbox itself fails.
Environment: ${STOP_BEFORE_START_ENV}=1 stops right before krun_start_enter (benchmarks).`;

function fail(message: string): number {
  // Synchronous: krun_start_enter may end the process before async output is flushed.
  const line = message.split("\n").map((l) => `nerdbox vmm: ${l}\n`).join("");
  Deno.stderr.writeSync(new TextEncoder().encode(line));
  return 125;
}

async function readRequest(arg: string): Promise<VmmRequest> {
  const text = arg === "-"
    ? await new Response(Deno.stdin.readable).text()
    : await Deno.readTextFile(arg);
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new Error(`${arg}: not JSON (${(e as Error).message})`);
  }
  try {
    return parseVmmRequest(json);
  } catch (e) {
    throw new Error(`${arg}: not a nerdbox vmm request: ${(e as Error).message}`);
  }
}

/** Entry point of `nerdbox vmm`. */
export async function main(args: string[]): Promise<number> {
  if (args[0] === "-h" || args[0] === "--help") {
    console.log(USAGE);
    return 0;
  }
  if (args.length !== 1) {
    console.error(USAGE);
    return 125;
  }
  let req: VmmRequest;
  try {
    req = await readRequest(args[0]);
  } catch (e) {
    return fail(`cannot read the request: ${(e as Error).message}`);
  }
  const { plan } = req;
  try {
    if (!dieWithParent(req.parentPid)) return fail(`the parent (pid ${req.parentPid}) is gone`);
    const lib = loadLibkrun(plan.libkrun?.path ? { explicit: plan.libkrun.path } : {});
    lib.initLog({ level: plan.libkrun?.logLevel ?? DEFAULT_VMM_LOG_LEVEL });
    const channelFd = connectUnixFd(req.channelSocket);
    const { ctx, error } = configureContext(lib, plan, {
      guest: req.guest,
      channelFd,
      consoleLog: req.consoleLog,
      ...(req.volumesDir !== undefined ? { volumesDir: req.volumesDir } : {}),
    });
    if (error) return fail(error.message);
    if (plan.network.kind === "tsi" && !plan.network.publishAll) {
      try {
        guardTsiListeners(plan.stateDir, plan.network.ports.map((p) => p.hostPort));
      } catch (e) {
        return fail(
          `cannot keep unpublished guest ports off the host (TSI): ${(e as Error).message}; ` +
            `publish them (-p, io.containerd.nerdbox.publish) or ask for every port with ` +
            `io.containerd.nerdbox.publish=all`,
        );
      }
    }
    if (Deno.env.get(STOP_BEFORE_START_ENV)) {
      return fail(`stopped before krun_start_enter (${STOP_BEFORE_START_ENV} is set)`);
    }
    await lib.startEnter(ctx);
    return fail("krun_start_enter returned");
  } catch (e) {
    if (e instanceof SpecValidationError) return fail(e.errors.map(formatSpecError).join("\n"));
    if (e instanceof KrunError || e instanceof KrunArgumentError) return fail(e.message);
    return fail((e as Error).message);
  }
}
