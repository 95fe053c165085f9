/** Reads the DNS settings of a resolv.conf text (nameserver, search/domain, options lines). */
import type { DnsSpec } from "../spec/types.ts";

/**
 * The nameservers (loopback ones dropped: they would be the guest's own), the last search or
 * domain line's names, and the last options line of `text`; words that are not plain names are
 * skipped.
 */
export function parseResolvConf(text: string): DnsSpec {
  const out: DnsSpec = { nameservers: [], search: [], options: [] };
  for (const line of text.split("\n")) {
    const [key, ...vals] = line.trim().split(/\s+/);
    if (key === "nameserver" && vals[0] && /^[0-9a-fA-F.:]+$/.test(vals[0])) {
      if (!/^127\.|^::1$/.test(vals[0])) out.nameservers.push(vals[0]);
    } else if (key === "search" || key === "domain") {
      out.search = vals.filter((v) => /^[A-Za-z0-9.-]+$/.test(v));
    } else if (key === "options") {
      out.options = vals.filter((v) => /^[A-Za-z0-9:_-]+$/.test(v));
    }
  }
  return out;
}
