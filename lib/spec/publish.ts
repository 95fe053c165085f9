/**
 * `io.containerd.nerdbox.publish`: which guest ports the default network (TSI under libkrun, the
 * private passt under QEMU) publishes on the host. Absent or `none`: nothing; a comma-separated
 * list of `[IP:]HOST:GUEST[/tcp|/udp]`: those; `all`: every port the guest listens on, 1:1
 * (libkrun's TSI only).
 */
import { type PortSpec, type SpecError, SpecValidationError } from "./types.ts";
import { parsePort } from "./ports.ts";

/** What the publish annotation asks for. */
export interface PublishSpec {
  /** Every guest listener, as libkrun does when no port map is set. */
  all: boolean;
  /** The listed ports (empty with `all` or `none`). */
  ports: PortSpec[];
}

/** Most ports one publish annotation may list. */
export const MAX_PUBLISHED_PORTS = 128;

/** Parses the annotation's value; throws SpecValidationError naming `key` and the entry. */
export function parsePublishValue(value: string, key: string): PublishSpec {
  const text = value.trim();
  if (text === "none") return { all: false, ports: [] };
  if (text === "all") return { all: true, ports: [] };
  const entries = text.split(",").map((e) => e.trim());
  const errors: SpecError[] = [];
  if (text === "" || entries.some((e) => e === "")) {
    throw new SpecValidationError([{
      annotation: key,
      field: "",
      value,
      message: `${JSON.stringify(value)}: expected none, all, or a comma-separated list of ` +
        `[IP:]HOST:GUEST[/tcp|/udp] without empty entries, e.g. 8080:80,5353:53/udp`,
    }]);
  }
  if (entries.length > MAX_PUBLISHED_PORTS) {
    throw new SpecValidationError([{
      annotation: key,
      field: "",
      value: `${entries.length} entries`,
      message: `${entries.length} ports: expected at most ${MAX_PUBLISHED_PORTS}`,
    }]);
  }
  const ports: PortSpec[] = [];
  entries.forEach((e, i) => {
    try {
      ports.push(parsePort(e, key));
    } catch (err) {
      if (!(err instanceof SpecValidationError)) throw err;
      errors.push(...err.errors.map((x) => ({ ...x, field: `port #${i}` })));
    }
  });
  if (errors.length > 0) throw new SpecValidationError(errors);
  return { all: false, ports };
}
