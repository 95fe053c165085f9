/** guest init's dev-mode command line (`--channel SOCK [--config FILE] [--work-dir DIR]`). */

/** Dev-mode flags (`--channel SOCK`, `--config FILE`, `--work-dir DIR`); node:util costs startup. */
export function parseFlags(
  args: string[],
): { channel?: string; config?: string; "work-dir"?: string } {
  const out: Record<string, string> = {};
  for (let i = 0; i < args.length; i++) {
    const m = args[i].match(/^--(channel|config|work-dir)(?:=(.*))?$/);
    if (!m) {
      throw new Error(`unknown argument "${args[i]}": expected --channel, --config or --work-dir`);
    }
    const value = m[2] ?? args[++i];
    if (value === undefined || value === "") throw new Error(`--${m[1]} needs a value`);
    out[m[1]] = value;
  }
  return out;
}
