/**
 * libkrun's process-wide logger: `krun_set_log_level` and `krun_init_log` as checked calls. libkrun
 * keeps one logger per process and a second init aborts the process (exit 134), so this module
 * owns the "already initialised" fact and refuses the second call.
 */
import { checkKrunResult, KrunArgumentError } from "./libkrun_errors.ts";
import { checkInt, I32_MAX, I32_MIN, U32_MAX } from "./libkrun_marshal.ts";
import type { KrunSymbols } from "./libkrun_symbols.ts";

let loggerInitialized = false;

/** Whether this process already initialised libkrun's logger. */
export function libkrunLoggerInitialized(): boolean {
  return loggerInitialized;
}

/** Options of `krun_init_log`. */
export interface InitLogOptions {
  /** Log target fd: -1 (stderr, default), 1, 2, or ≥3 (libkrun takes it over). */
  fd?: number;
  /** 0 off … 5 trace. */
  level: number;
  /** 0 auto, 1 always, 2 never colour. */
  style?: number;
  /** 0, or 1 = ignore RUST_LOG. */
  options?: number;
}

/** `krun_set_log_level`: initialises the logger (once per process). */
export function setLogLevel(symbols: KrunSymbols, level: number): void {
  const call = "krun_set_log_level";
  checkInt(call, "level", level, 0, U32_MAX);
  claimLogger(call);
  checkKrunResult(call, symbols.krun_set_log_level(level), { level });
}

/** `krun_init_log`: initialises the logger with a target fd (once per process). */
export function initLog(symbols: KrunSymbols, o: InitLogOptions): void {
  const call = "krun_init_log";
  const fd = checkInt(call, "target_fd", o.fd ?? -1, I32_MIN, I32_MAX);
  const level = checkInt(call, "level", o.level, 0, U32_MAX);
  const style = checkInt(call, "style", o.style ?? 0, 0, U32_MAX);
  const options = checkInt(call, "options", o.options ?? 0, 0, U32_MAX);
  claimLogger(call);
  const ret = symbols.krun_init_log(fd, level, style, options);
  // EINVAL is returned before any logger is installed: a corrected call may follow.
  if (ret === -22) loggerInitialized = false;
  checkKrunResult(call, ret, { target_fd: fd, level, style, options });
}

function claimLogger(call: string): void {
  if (loggerInitialized) {
    throw new KrunArgumentError(
      call,
      "logger",
      "libkrun's logger is already initialised in this process (a second init aborts it)",
    );
  }
  loggerInitialized = true;
}
