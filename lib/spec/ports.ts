/** Published ports: `[IP:]HOST:GUEST[/tcp|/udp]`. */
import { type PortSpec, SpecValidationError } from "./types.ts";
import { formatIp, parseIp } from "./ip.ts";
import { FieldError } from "./field_error.ts";

const PORT_RE = /^[1-9][0-9]{0,4}$/;
const EXPECTED = "expected [IP:]HOST:GUEST[/tcp|/udp] with ports from 1 to 65535, " +
  "e.g. 8080:80, 127.0.0.1:8080:80/tcp or [::1]:5353:53/udp";

function port(text: string): number | undefined {
  return PORT_RE.test(text) && Number(text) <= 65535 ? Number(text) : undefined;
}

/** Parses one published port; throws SpecValidationError naming `flag`. */
export function parsePort(text: string, flag = "--publish"): PortSpec {
  const fail = (why: string): never => {
    throw new SpecValidationError([{
      annotation: flag,
      field: "",
      value: text,
      message: `${JSON.stringify(text)}: ${why}${why ? ": " : ""}${EXPECTED}`,
    }]);
  };
  let rest = text;
  let protocol: "tcp" | "udp" = "tcp";
  const slash = rest.lastIndexOf("/");
  if (slash >= 0) {
    const p = rest.slice(slash + 1);
    if (p !== "tcp" && p !== "udp") fail(`unknown protocol "${p}"`);
    protocol = p as "tcp" | "udp";
    rest = rest.slice(0, slash);
  }
  let hostIp: string | undefined;
  if (rest.startsWith("[")) {
    const close = rest.indexOf("]:");
    if (close < 0) fail("an IPv6 address must be followed by ]:");
    hostIp = rest.slice(1, close);
    rest = rest.slice(close + 2);
    const ip = checkedIp(hostIp, fail);
    if (ip.family !== 6) fail("brackets are for IPv6 addresses only");
    hostIp = formatIp(ip);
  } else {
    const parts = rest.split(":");
    if (parts.length === 3) {
      hostIp = formatIp(checkedIp(parts[0], fail));
      if (hostIp.includes(":")) fail("write an IPv6 host address in brackets");
      rest = `${parts[1]}:${parts[2]}`;
    } else if (parts.length !== 2) {
      fail("");
    }
  }
  const [h, g, ...extra] = rest.split(":");
  const hostPort = port(h);
  const guestPort = port(g ?? "");
  if (extra.length > 0 || hostPort === undefined || guestPort === undefined) fail("");
  return {
    ...(hostIp === undefined ? {} : { hostIp }),
    hostPort: hostPort!,
    guestPort: guestPort!,
    protocol,
  };
}

function checkedIp(text: string, fail: (why: string) => never) {
  try {
    return parseIp(text);
  } catch (e) {
    if (e instanceof FieldError) fail(`host address "${text}" is not an IP address`);
    throw e;
  }
}

/** `[IP:]HOST:GUEST/PROTO` of a published port (what parsePort reads back). */
export function formatPort(p: PortSpec): string {
  const ip = p.hostIp === undefined
    ? ""
    : p.hostIp.includes(":")
    ? `[${p.hostIp}]:`
    : `${p.hostIp}:`;
  return `${ip}${p.hostPort}:${p.guestPort}/${p.protocol}`;
}
