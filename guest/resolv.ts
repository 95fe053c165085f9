/** Renders /etc/resolv.conf, /etc/hosts and /etc/hostname for the container (pure text). */
import { quote } from "./quote.ts";

/** DNS settings after merging GuestConfig.dns with what DHCP gave. */
export interface DnsSettings {
  nameservers: string[];
  search: string[];
  options: string[];
  /** The `domain` line (ctr.dns `domain=`). */
  domain?: string;
}

/**
 * Configured DNS wins when it names servers; otherwise DHCP's servers. Likewise its search list
 * or domain wins over DHCP's domain.
 */
export function mergeDns(
  configured: DnsSettings | undefined,
  dhcp: { nameservers: string[]; domains: string[] },
): DnsSettings {
  const useConfigured = (configured?.nameservers.length ?? 0) > 0;
  const ownDomains = (configured?.search.length ?? 0) > 0 || configured?.domain !== undefined;
  return {
    nameservers: useConfigured ? configured!.nameservers : [...new Set(dhcp.nameservers)],
    search: ownDomains ? configured!.search : [...new Set(dhcp.domains)],
    options: configured?.options ?? [],
    ...(configured?.domain !== undefined ? { domain: configured.domain } : {}),
  };
}

/** A value that would not stay one word on its resolv.conf line. */
export class ResolvConfError extends Error {
  /** Creates the error for `field` holding `value`. */
  constructor(field: string, value: string) {
    super(
      `resolv.conf ${field} ${quote(value)}: expected one word without whitespace ` +
        `or control characters`,
    );
    this.name = "ResolvConfError";
  }
}

// Whitespace (the Unicode line/paragraph separators included) and C0/C1 controls and DEL.
const UNSAFE = /[\s\p{Cc}]/u;

function checkWords(field: string, values: string[]): void {
  for (const v of values) if (v === "" || UNSAFE.test(v)) throw new ResolvConfError(field, v);
}

/**
 * resolv.conf text (glibc reads at most 3 nameservers; all are written). Every value must be one
 * word: one with whitespace or control characters could add lines, so it is refused.
 */
export function resolvConf(d: DnsSettings): string {
  checkWords("search", d.search);
  checkWords("nameserver", d.nameservers);
  checkWords("options", d.options);
  if (d.domain !== undefined) checkWords("domain", [d.domain]);
  const lines = ["# written by nerdbox guest init"];
  // domain and search override each other, the last one winning: search last, as inspect shows.
  if (d.domain !== undefined) lines.push(`domain ${d.domain}`);
  if (d.search.length) lines.push(`search ${d.search.join(" ")}`);
  for (const ns of d.nameservers) lines.push(`nameserver ${ns}`);
  if (d.options.length) lines.push(`options ${d.options.join(" ")}`);
  return lines.join("\n") + "\n";
}

/** /etc/hosts text: localhost entries, then the hostname on the first address (or 127.0.1.1). */
export function hostsFile(hostname: string, firstAddr?: string): string {
  const short = hostname.split(".")[0];
  const names = short !== hostname ? `${hostname} ${short}` : hostname;
  return [
    "127.0.0.1\tlocalhost",
    "::1\tlocalhost ip6-localhost ip6-loopback",
    `${firstAddr ?? "127.0.1.1"}\t${names}`,
    "",
  ].join("\n");
}
