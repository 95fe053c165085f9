/**
 * Host network state for before/after comparisons in CNI tests: links, addresses, routes,
 * iptables rules (iptables-save minus counters and comments), nftables tables, named netns and
 * forwarding sysctls. Lines are sorted so the diff shows what appeared or vanished.
 */

async function out(cmd: string, args: string[]): Promise<string> {
  const o = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  if (!o.success) {
    throw new Error(`${cmd} ${args.join(" ")}: ${new TextDecoder().decode(o.stderr)}`);
  }
  return new TextDecoder().decode(o.stdout);
}

function lines(text: string): string[] {
  return text.split("\n").map((l) => l.trimEnd()).filter((l) => l && !l.startsWith("#"));
}

/** One labelled set of lines per aspect of host state. */
export type HostSnapshot = Record<string, string[]>;

/** Takes a snapshot of everything CNI plugins could change on the host. */
export async function hostSnapshot(): Promise<HostSnapshot> {
  const noCounters = (t: string) =>
    lines(t).map((l) => l.replace(/\[\d+:\d+\]/g, "[]")).filter((l) => !l.startsWith("#"));
  return {
    links: lines(await out("ip", ["-o", "link", "show"])).map((l) =>
      l.replace(/^\d+: /, "").replace(/ qlen \d+/, "")
    ).sort(),
    addrs: lines(await out("ip", ["-o", "addr", "show"])).map((l) =>
      l.replace(/^\d+: /, "").replace(/valid_lft .*$/, "")
    ).sort(),
    routes4: lines(await out("ip", ["-4", "route", "show", "table", "all"])).sort(),
    routes6: lines(await out("ip", ["-6", "route", "show", "table", "all"])).sort(),
    iptables: noCounters(await out("iptables-save", [])),
    ip6tables: noCounters(await out("ip6tables-save", [])),
    nftTables: lines(await out("nft", ["list", "tables"])).sort(),
    // CNI plugins never create namespaces and nerdbox's CNI sessions name theirs `nbx-*`; other
    // areas' tests create and delete their own netns in parallel on a shared dev machine.
    netns: lines(await out("ip", ["netns", "list"])).filter((l) => /^nbx(-|cni)/.test(l)).sort(),
    forwarding: [
      `ipv4 ${(await Deno.readTextFile("/proc/sys/net/ipv4/ip_forward")).trim()}`,
      `ipv6 ${(await Deno.readTextFile("/proc/sys/net/ipv6/conf/all/forwarding")).trim()}`,
    ],
  };
}

/**
 * Objects of other areas' tests running in parallel on a shared dev machine (their names start
 * with `nbx` but not `nbxcni`/`nbx-`, e.g. `nbxq…`); CNI tests only use `nbxcni*` and `nbx-*`.
 */
const FOREIGN = /(^|[\s@"])nbx(?!cni|-)[A-Za-z0-9_.]/;

/** Human-readable differences between two snapshots ("" when equal), ignoring FOREIGN lines. */
export function diffSnapshots(before: HostSnapshot, after: HostSnapshot): string {
  const parts: string[] = [];
  for (const key of Object.keys(before)) {
    const a = new Set(before[key].filter((l) => !FOREIGN.test(l)));
    const b = new Set((after[key] ?? []).filter((l) => !FOREIGN.test(l)));
    const gone = [...a].filter((l) => !b.has(l));
    const added = [...b].filter((l) => !a.has(l));
    if (gone.length || added.length) {
      parts.push(
        `${key}:\n${gone.map((l) => `  - ${l}`).join("\n")}\n${
          added.map((l) => `  + ${l}`).join("\n")
        }`,
      );
    }
  }
  return parts.join("\n");
}

/** Asserts the host is as `before` showed it (the diff names what changed). */
export async function assertHostUnchanged(before: HostSnapshot): Promise<void> {
  const diff = diffSnapshots(before, await hostSnapshot());
  if (diff !== "") throw new Error(`host state changed:\n${diff}`);
}
