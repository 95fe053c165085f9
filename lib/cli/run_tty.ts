/**
 * `nerdbox run -t` on the host side: the caller's terminal in raw mode while the workload runs (so
 * ^C, ^Z and line editing reach the guest's pty, where they act on the foreground process group),
 * and the terminal's size sent to the guest at start and on every SIGWINCH.
 */
import type { VmHandle } from "../vm/types.ts";

/** Starts forwarding; the returned function restores the terminal and stops listening. */
export function attachHostTerminal(handle: VmHandle): () => void {
  const sendSize = () => {
    try {
      const { columns, rows } = Deno.consoleSize();
      void handle.resize?.(columns, rows).catch(() => {});
    } catch { /* stdout is not a terminal: the guest keeps 80x24 */ }
  };
  let raw = false;
  if (Deno.stdin.isTerminal()) {
    try {
      Deno.stdin.setRaw(true);
      raw = true;
    } catch { /* not a real terminal after all */ }
  }
  sendSize();
  let listening = false;
  try {
    Deno.addSignalListener("SIGWINCH", sendSize);
    listening = true;
  } catch { /* no SIGWINCH here */ }
  return () => {
    if (listening) Deno.removeSignalListener("SIGWINCH", sendSize);
    if (raw) {
      try {
        Deno.stdin.setRaw(false);
      } catch { /* gone */ }
    }
  };
}
