/**
 * The baseline for bench/run_bench.ts: a minimal libkrun client. Loads libkrun with a bare
 * Deno.dlopen, replays a call list (JSON from `nerdbox run --dry-run --json`) with plain
 * marshalling, then enters krun_start_enter — or exits right before it when
 * NERDBOX_VMM_STOP_BEFORE_START is set, the same stop point `nerdbox vmm` honours.
 *
 * Usage: deno run -A bench/krun_minimal.ts CALLS.json
 */
import { KRUN_SYMBOLS } from "../ffi/libkrun_symbols.ts";

const LIB_DIR = Deno.env.get("KRUN_MIN_LIB_DIR") ?? "/usr/local/lib";
Deno.dlopen(`${LIB_DIR}/libkrunfw.so.5`, {});
// The C signatures are ffi/libkrun_symbols.ts's (one owner); only the checked wrapper is left out.
const krun = Deno.dlopen(`${LIB_DIR}/libkrun.so.1`, KRUN_SYMBOLS);

const cstr = (s: string) => new TextEncoder().encode(`${s}\0`);
const keep: Uint8Array[] = [];
function arr(list: string[]): Uint8Array {
  const ptrs = new BigUint64Array(list.length + 1);
  list.forEach((s, i) => {
    const b = cstr(s);
    keep.push(b);
    ptrs[i] = BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(b)));
  });
  return new Uint8Array(ptrs.buffer);
}
function mac(s: string): Uint8Array {
  return new Uint8Array(s.split(":").map((h) => parseInt(h, 16)));
}

interface Call {
  call: string;
  args: Array<string | number | string[]>;
}
const { calls } = JSON.parse(await Deno.readTextFile(Deno.args[0])) as { calls: Call[] };
const s = krun.symbols as unknown as Record<string, (...a: unknown[]) => number>;
s.krun_init_log(-1, 1, 0, 0);
const ctx = krun.symbols.krun_create_ctx();
for (const { call, args } of calls) {
  if (
    !(call in s) || call === "krun_init_log" || call === "krun_create_ctx" ||
    call === "krun_start_enter"
  ) continue;
  const params: readonly string[] = KRUN_SYMBOLS[call as keyof typeof KRUN_SYMBOLS].parameters;
  // A `pointer` parameter gets the buffer's address (the buffer kept alive), a `buffer` the buffer.
  const pass = (i: number, b: Uint8Array) => {
    keep.push(b);
    return params[i] === "pointer" ? Deno.UnsafePointer.of(b) : b;
  };
  const m = args.map((v, i) => {
    if (i === 0) return ctx;
    if (Array.isArray(v)) return pass(i, arr(v));
    if (typeof v === "string") {
      return pass(i, call.startsWith("krun_add_net_") && i === 3 ? mac(v) : cstr(v));
    }
    // fds from the dry run are not ours: use stdout for the console port
    if (call === "krun_add_console_port_inout" && i >= 3) return 1;
    return v;
  });
  const r = s[call](...m);
  if (r < 0) throw new Error(`${call} = ${r}`);
}
if (Deno.env.get("NERDBOX_VMM_STOP_BEFORE_START")) Deno.exit(0);
await krun.symbols.krun_start_enter(ctx);
