/** `io.containerd.nerdbox.ctr.dns`: resolv.conf lines as one CSV record. */
import type { DnsSpec, SpecError } from "./types.ts";
import { parseKeyValueRecord } from "./kv.ts";
import { FieldError } from "./field_error.ts";
import { formatIp, isMulticast, isUnspecified, parseIp } from "./ip.ts";
import { checkDomain } from "./domain.ts";

/** Every key of the dns value; each field becomes one resolv.conf entry. */
export const DNS_KEYS = ["nameserver", "search", "options", "domain"] as const;

/** Nameservers glibc reads (MAXNS). */
export const MAX_NAMESERVERS = 3;

const OPTION = /^[A-Za-z][A-Za-z0-9_-]*(:[0-9]{1,5})?$/;

/** The result of parsing the dns value. */
export interface ParsedDns {
  dns?: DnsSpec;
  warnings: string[];
  errors: SpecError[];
}

/** Parses `nameserver=IP,search=DOMAIN,options=OPT,domain=DOMAIN,…` (one item per field). */
export function parseDnsValue(value: string, annotation: string): ParsedDns {
  const warnings: string[] = [];
  const { fields, errors } = parseKeyValueRecord(value, annotation, DNS_KEYS, [
    "nameserver",
    "search",
    "options",
  ]);
  const dns: DnsSpec = { nameservers: [], search: [], options: [] };
  for (const { key, value: v } of fields) {
    try {
      if (key === "nameserver") {
        const ip = parseIp(v);
        if (isUnspecified(ip) || isMulticast(ip)) {
          throw new FieldError("expected a unicast nameserver address");
        }
        dns.nameservers.push(formatIp(ip));
      } else if (key === "search" || key === "domain") {
        if (/\s/.test(v)) {
          throw new FieldError(`expected one domain per ${key} field (give ${key}= again)`);
        }
        checkDomain(v);
        if (key === "domain") dns.domain = v;
        else dns.search.push(v);
      } else {
        if (/\s/.test(v)) {
          throw new FieldError("expected one option per options field (give options= again)");
        }
        if (!OPTION.test(v)) {
          throw new FieldError(
            "expected a resolv.conf option such as ndots:2, timeout:1 or rotate",
          );
        }
        dns.options.push(v);
      }
    } catch (e) {
      if (!(e instanceof FieldError)) throw e;
      errors.push({ annotation, field: key, value: v, message: e.message });
    }
  }
  if (dns.nameservers.length > MAX_NAMESERVERS) {
    warnings.push(
      `${annotation}: ${dns.nameservers.length} nameservers; resolvers use only the first ` +
        `${MAX_NAMESERVERS}`,
    );
  }
  if (errors.length > 0) return { warnings, errors };
  return { dns, warnings, errors };
}

/** The resolv.conf text for `dns`: nameserver lines, then domain, search and options. */
export function formatResolvConf(dns: DnsSpec): string {
  const lines = dns.nameservers.map((n) => `nameserver ${n}`);
  if (dns.domain) lines.push(`domain ${dns.domain}`);
  if (dns.search.length > 0) lines.push(`search ${dns.search.join(" ")}`);
  if (dns.options.length > 0) lines.push(`options ${dns.options.join(" ")}`);
  return lines.map((l) => `${l}\n`).join("");
}
