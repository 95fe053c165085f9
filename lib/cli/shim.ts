/**
 * `nerdbox shim` / `containerd-shim-nerdbox-v1`: the containerd runtime v2 shim. `start` and
 * `delete` are the short-lived commands containerd runs; `serve` is the daemon `start` spawns.
 * Each action imports only its own modules, so `start` and `delete` stay quick.
 */
import { FlagError, parseShimFlags } from "../shim/flags.ts";
import { VERSION } from "../version.ts";

const USAGE = `Usage: containerd-shim-nerdbox-v1 -namespace NS -address ADDR -publish-binary BIN \\
         -id ID [-bundle DIR] [-debug] start|delete
       containerd-shim-nerdbox-v1 -info < OPTIONS   (RuntimeInfo protobuf on stdout)

The containerd runtime v2 shim of nerdbox (runtime name io.containerd.nerdbox.v1). containerd runs
it; people use it through ctr/nerdctl/CRI, e.g.:
  ctr run --rm --runtime io.containerd.nerdbox.v1 IMAGE ID CMD...

Actions:
  start    start (or re-use) the shim daemon for this container's group; print its address
  delete   clean up after a container whose shim is gone; print a DeleteResponse`;

async function writeAll(w: { write(p: Uint8Array): Promise<number> }, b: Uint8Array) {
  let off = 0;
  while (off < b.length) off += await w.write(b.subarray(off));
}

async function readAll(stream: ReadableStream<Uint8Array>): Promise<Uint8Array> {
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/** Runs one shim action and returns the exit code. */
export async function main(args: string[]): Promise<number> {
  if (args.includes("-h") || args.includes("--help") || args.includes("-help")) {
    console.log(USAGE);
    return 0;
  }
  let flags;
  try {
    flags = parseShimFlags(args);
  } catch (err) {
    if (!(err instanceof FlagError)) throw err;
    console.error(`${err.message}\n${USAGE}`);
    return 2;
  }
  if (flags.version) {
    console.log(`containerd-shim-nerdbox-v1:\n  Version:  ${VERSION}\n  Runtime:  nerdbox`);
    return 0;
  }
  if (flags.info) {
    const { runtimeInfo, parseInfoOptions, encodeRuntimeInfo } = await import(
      "../shim/runtime_info.ts"
    );
    try {
      const input = Deno.stdin.isTerminal() ? new Uint8Array() : await readAll(Deno.stdin.readable);
      await writeAll(Deno.stdout, encodeRuntimeInfo(runtimeInfo(parseInfoOptions(input))));
      return 0;
    } catch (err) {
      console.error(`nerdbox shim -info: ${err instanceof Error ? err.message : err}`);
      return 1;
    }
  }
  switch (flags.action) {
    case "start": {
      const { start } = await import("../shim/manager.ts");
      try {
        const address = await start(flags);
        await writeAll(Deno.stdout, new TextEncoder().encode(address));
        return 0;
      } catch (err) {
        console.error(`nerdbox shim start: ${err instanceof Error ? err.message : err}`);
        return 1;
      }
    }
    case "delete": {
      const { deleteCommand, encodeDeleteResponse } = await import("../shim/manager.ts");
      try {
        const res = await deleteCommand(flags);
        await writeAll(Deno.stdout, await encodeDeleteResponse(res));
        return 0;
      } catch (err) {
        console.error(`nerdbox shim delete: ${err instanceof Error ? err.message : err}`);
        return 1;
      }
    }
    case "serve": {
      const { serve } = await import("../shim/daemon.ts");
      return await serve(flags);
    }
    default:
      console.error(
        flags.action ? `unknown action ${JSON.stringify(flags.action)}\n${USAGE}` : USAGE,
      );
      return 2;
  }
}
