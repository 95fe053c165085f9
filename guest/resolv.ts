/** Renders /etc/resolv.conf, /etc/hosts and /etc/hostname for the container (pure text). */

/** DNS settings after merging GuestConfig.dns with what DHCP gave. */
export interface DnsSettings {
  nameservers: string[];
  search: string[];
  options: string[];
}

/** Configured DNS wins when it names servers; otherwise DHCP's servers and domain. */
export function mergeDns(
  configured: DnsSettings | undefined,
  dhcp: { nameservers: string[]; domains: string[] },
): DnsSettings {
  const useConfigured = (configured?.nameservers.length ?? 0) > 0;
  return {
    nameservers: useConfigured ? configured!.nameservers : [...new Set(dhcp.nameservers)],
    search: configured?.search.length ? configured.search : [...new Set(dhcp.domains)],
    options: configured?.options ?? [],
  };
}

/** resolv.conf text (glibc reads at most 3 nameservers; all are written). */
export function resolvConf(d: DnsSettings): string {
  const lines = ["# written by nerdbox guest init"];
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
