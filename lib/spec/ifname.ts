/** Linux interface names (as `dev_valid_name` checks them), optionally a `%d` template. */
import { FieldError } from "./field_error.ts";

/** IFNAMSIZ minus the terminating NUL. */
export const IFNAME_MAX = 15;

/** Checks an interface name or `eth%d`-style template; throws FieldError saying what is expected. */
export function checkIfname(name: string): void {
  const bytes = new TextEncoder().encode(name).length;
  if (bytes === 0) throw new FieldError("expected an interface name such as eth0 or eth%d");
  if (bytes > IFNAME_MAX) {
    throw new FieldError(`expected at most ${IFNAME_MAX} bytes (IFNAMSIZ - 1), got ${bytes}`);
  }
  if (name === "." || name === "..") throw new FieldError('expected a name other than "." or ".."');
  if (/[/:\s]/.test(name)) {
    throw new FieldError("expected an interface name without '/', ':' or whitespace");
  }
  const percents = name.split("%").length - 1;
  const templates = name.split("%d").length - 1;
  if (percents !== templates) throw new FieldError("expected '%' only as part of %d");
  if (templates > 1) throw new FieldError("expected at most one %d");
}
