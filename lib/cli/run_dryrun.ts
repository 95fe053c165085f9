/**
 * `nerdbox run --dry-run`: prints the plan and, under libkrun, every call the `nerdbox vmm` child
 * would make, applied to a real context through the same sequence the child runs
 * (lib/vm/libkrun_calls.ts configureContext); krun_start_enter is not called.
 */
import { formatSpecError, SpecValidationError } from "../spec/types.ts";
import type { Libkrun } from "../../ffi/libkrun.ts";
import { loadLibkrun, locateLibkrun } from "../vm/libkrun_locate.ts";
import { closeFd, guestExec, statePaths, unixSocketPair } from "../vm/libkrun.ts";
import {
  configureContext,
  DEFAULT_VMM_LOG_LEVEL,
  type KrunCallResult,
  type KrunNote,
  libkrunCalls,
} from "../vm/libkrun_calls.ts";
import type { VmPlan } from "../vm/types.ts";

/** Exit status for nerdbox's own failures. */
const EXIT_NERDBOX = 125;

function err(line: string): void {
  console.error(`nerdbox run: ${line}`);
}

/** Loads libkrun as `--libkrun` says, or returns why it did not load. */
export function tryLoadLibkrun(path: string | undefined): Libkrun | Error {
  try {
    return loadLibkrun(path !== undefined ? { explicit: path } : {});
  } catch (e) {
    return e as Error;
  }
}

/** Prints the dry run of `plan` (JSON with `json`); returns the exit status. */
export function dryRun(plan: VmPlan, json: boolean, libkrunPath?: string): Promise<number> {
  if (plan.backend !== "libkrun") {
    const out = { backend: plan.backend, plan, calls: [] };
    if (json) console.log(JSON.stringify(out, null, 2));
    else {
      console.log(`backend: ${plan.backend} (no libkrun calls; the plan as QEMU gets it:)`);
      console.log(JSON.stringify(plan, null, 2));
    }
    return Promise.resolve(0);
  }
  return libkrunDryRun(plan, json, libkrunPath);
}

async function libkrunDryRun(plan: VmPlan, json: boolean, libkrunPath?: string): Promise<number> {
  const lib = tryLoadLibkrun(libkrunPath);
  const loc = (() => {
    try {
      return locateLibkrun(libkrunPath !== undefined ? { explicit: libkrunPath } : {}).path;
    } catch {
      return null;
    }
  })();
  const guest = await guestExec("<guest image>/root");
  const consoleLog = statePaths(plan.stateDir).consoleLog;
  const level = plan.libkrun?.logLevel ?? DEFAULT_VMM_LOG_LEVEL;
  const notRun = "not called (dry run)";
  const calls: Array<KrunCallResult | KrunNote> = [];
  let failed: Error | undefined;
  let loadError: string | undefined;
  if (lib instanceof Error) {
    loadError = lib.message;
    const list = libkrunCalls(plan, { ctx: 0, guest, channelFd: 3, consoleLog, vnetHdr: true });
    const why = "not called: libkrun did not load";
    calls.push({ call: "krun_init_log", args: [-1, level, 0, 0], result: why });
    calls.push({ call: "krun_create_ctx", args: [], result: why });
    for (const c of list) calls.push({ ...c, result: why });
  } else {
    const [fd, peer] = unixSocketPair();
    try {
      calls.push({
        call: "krun_init_log",
        args: [-1, level, 0, 0],
        result: `${notRun}: the vmm child calls it`,
      });
      let configured;
      try {
        configured = configureContext(lib, plan, { guest, channelFd: fd, consoleLog });
      } catch (e) {
        if (!(e instanceof SpecValidationError)) throw e;
        for (const x of e.errors) err(formatSpecError(x));
        return EXIT_NERDBOX;
      }
      const { ctx } = configured;
      calls.push({ call: "krun_create_ctx", args: [], result: ctx }, ...configured.results);
      failed = configured.error;
      calls.push({ call: "krun_start_enter", args: [ctx], result: notRun });
      lib.freeCtx(ctx);
      calls.push({ call: "krun_free_ctx", args: [ctx], result: 0 });
    } finally {
      closeFd(fd);
      closeFd(peer);
    }
  }
  if (json) {
    console.log(JSON.stringify(
      {
        backend: plan.backend,
        libkrun: loc,
        ...(loadError ? { libkrunError: loadError } : {}),
        plan,
        calls,
        ...(failed ? { error: failed.message } : {}),
      },
      null,
      2,
    ));
  } else {
    console.log(`backend: libkrun (${loc ?? "not found"})`);
    if (loadError) console.log(`libkrun did not load, calls not applied: ${loadError}`);
    for (const c of calls) {
      const args = c.args.map((a) => JSON.stringify(a)).join(", ");
      const res = typeof c.result === "number" ? `= ${c.result}` : `  # ${c.result}`;
      console.log(`${c.call}(${args}) ${res}`);
    }
  }
  if (failed) {
    err(failed.message);
    return EXIT_NERDBOX;
  }
  return 0;
}
