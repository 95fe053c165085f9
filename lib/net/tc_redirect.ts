/**
 * The VM takes over a prepared pod netns's interface (Kata's "tcfilter" model): a tap in the netns,
 * `tc … mirred egress redirect` both ways between the tap and the pod interface (the one holding
 * the IPv4 default route), the guest NIC using that interface's MAC, MTU and addresses. Every port
 * and protocol the guest serves is then reachable at the pod IP, and its traffic leaves from it.
 * Undone exactly on teardown; the netns itself is the caller's.
 */
import { isHostNetns, refuseHostNetns } from "./host_netns.ts";
import { spawnInNetns } from "./netns.ts";
import type { NetnsPath } from "../spec/netns_path.ts";
import { type Mac, parseMac } from "../spec/mac.ts";

/** The pod interface the VM takes over, as read from the netns. */
export interface PodInterface {
  /** Interface name in the netns (`eth0` under CNI). */
  name: string;
  /** Lower-case MAC (the guest NIC uses it: CNI plugins may filter on it). */
  mac: Mac;
  mtu: number;
  /** Global addresses as CIDRs (IPv4 first). */
  addrs: string[];
  /** The IPv4 default route's gateway. */
  gateway4: string;
  /** Its tx queue length (adding an ingress qdisc raises a 0 to 1000; undo puts it back). */
  txqlen: number;
}

/** A live redirect. */
export interface TcRedirect {
  /** The tap QEMU opens (`-netdev tap,ifname=…`), inside the netns. */
  tap: string;
  pod: PodInterface;
  /** Removes the filters, the ingress qdiscs and the tap (idempotent, best effort). */
  undo(): Promise<void>;
}

/** Thrown when the netns cannot be handed to a VM. */
export class TcRedirectError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "TcRedirectError";
  }
}

/** The interface's MAC as lib/spec/mac.ts parses it, or undefined. */
function linkMac(text: string): Mac | undefined {
  try {
    return parseMac(text);
  } catch {
    return undefined;
  }
}
const IFNAME_RE = /^[A-Za-z0-9_.@-]{1,15}$/;

/** Runs `cmd args` inside `netns` to completion. */
export async function runInNetns(
  netns: string,
  cmd: string,
  args: string[],
): Promise<{ ok: boolean; stdout: string; stderr: string }> {
  const child = spawnInNetns(netns, cmd, {
    args,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { PATH: "/usr/sbin:/usr/bin:/sbin:/bin" },
  });
  const out = await child.output();
  const dec = new TextDecoder();
  return { ok: out.success, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr).trim() };
}

async function must(netns: string, cmd: string, args: string[]): Promise<string> {
  const r = await runInNetns(netns, cmd, args);
  if (!r.ok) {
    throw new TcRedirectError(`${cmd} ${args.join(" ")} (in netns ${netns}): ${r.stderr}`);
  }
  return r.stdout;
}

function isObj(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/**
 * Parses `ip -j addr show` and `ip -j -4 route show default` output into the pod interface: the
 * one holding the IPv4 default route. `where` names the netns in errors.
 */
export function parsePodInterface(
  addrJson: string,
  routeJson: string,
  where: string,
): PodInterface {
  let links: unknown, routes: unknown;
  try {
    links = JSON.parse(addrJson);
    routes = JSON.parse(routeJson);
  } catch (e) {
    throw new TcRedirectError(`netns ${where}: unreadable ip -j output: ${(e as Error).message}`);
  }
  if (!Array.isArray(links) || !Array.isArray(routes)) {
    throw new TcRedirectError(`netns ${where}: ip -j output is not a list`);
  }
  const def = routes.find((r) =>
    isObj(r) && r.dst === "default" && typeof r.dev === "string" && typeof r.gateway === "string"
  ) as { dev: string; gateway: string } | undefined;
  if (!def) {
    throw new TcRedirectError(
      `netns ${where} has no IPv4 default route via a gateway: the VM takes over the interface ` +
        `that holds it (as CNI's bridge/ptp plugins set up)`,
    );
  }
  const link = links.find((l) => isObj(l) && l.ifname === def.dev) as
    | Record<string, unknown>
    | undefined;
  if (!link) throw new TcRedirectError(`netns ${where}: default route device ${def.dev} not found`);
  const name = String(link.ifname);
  const mac = linkMac(String(link.address ?? ""));
  if (!IFNAME_RE.test(name) || link.link_type !== "ether" || mac === undefined) {
    throw new TcRedirectError(
      `netns ${where}: default route device ${JSON.stringify(name)} is not an Ethernet ` +
        `interface (link_type ${String(link.link_type)}); it cannot be handed to the VM`,
    );
  }
  const mtu = Number(link.mtu);
  if (!Number.isInteger(mtu) || mtu < 68 || mtu > 65535) {
    throw new TcRedirectError(`netns ${where}: ${name} mtu ${String(link.mtu)}: expected 68-65535`);
  }
  const v4: string[] = [];
  const v6: string[] = [];
  for (const a of Array.isArray(link.addr_info) ? link.addr_info : []) {
    if (!isObj(a) || a.scope !== "global" || typeof a.local !== "string") continue;
    const len = Number(a.prefixlen);
    if (a.family === "inet" && /^\d+\.\d+\.\d+\.\d+$/.test(a.local) && len >= 0 && len <= 32) {
      v4.push(`${a.local}/${len}`);
    } else if (a.family === "inet6" && /^[0-9a-f:]+$/i.test(a.local) && len >= 0 && len <= 128) {
      v6.push(`${a.local}/${len}`);
    }
  }
  if (v4.length === 0) {
    throw new TcRedirectError(
      `netns ${where}: ${name} has no global IPv4 address to hand to the VM`,
    );
  }
  if (!/^\d+\.\d+\.\d+\.\d+$/.test(def.gateway)) {
    throw new TcRedirectError(`netns ${where}: default gateway ${def.gateway}: expected IPv4`);
  }
  const txqlen = link.txqlen === undefined ? 0 : Number(link.txqlen);
  if (!Number.isInteger(txqlen) || txqlen < 0) {
    throw new TcRedirectError(`netns ${where}: ${name} txqlen ${String(link.txqlen)}: invalid`);
  }
  return { name, mac, mtu, addrs: [...v4, ...v6], gateway4: def.gateway, txqlen };
}

/** Reads the pod interface of `netns`. */
export async function readPodInterface(netns: string): Promise<PodInterface> {
  const addr = await must(netns, "ip", ["-j", "addr", "show"]);
  const route = await must(netns, "ip", ["-j", "-4", "route", "show", "default"]);
  return parsePodInterface(addr, route, netns);
}

/** A fresh tap name (`nbxt` + 8 hex, fits IFNAMSIZ). */
export function newTapName(): string {
  const b = crypto.getRandomValues(new Uint8Array(4));
  return `nbxt${Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("")}`;
}

function redirectArgs(from: string, to: string): string[] {
  return [
    "filter",
    "add",
    "dev",
    from,
    "parent",
    "ffff:",
    "protocol",
    "all",
    "u32",
    "match",
    "u8",
    "0",
    "0",
    "action",
    "mirred",
    "egress",
    "redirect",
    "dev",
    to,
  ];
}

/**
 * Undoes a redirect between `tap` and `dev` in `netns`: deletes the tap, and the ingress qdisc of
 * `dev` only while its filters redirect to that tap (never someone else's), then puts `dev`'s tx
 * queue length back to `txqlen`. Best effort; also used for runs that died (the sweep).
 */
export async function undoTcRedirect(
  netns: string,
  tap: string,
  dev: string,
  txqlen?: number,
): Promise<void> {
  if (!IFNAME_RE.test(tap) || !IFNAME_RE.test(dev)) return;
  if (isHostNetns(netns)) return; // never the host's own interfaces (nothing of ours is there)
  const filters = await runInNetns(netns, "tc", ["filter", "show", "dev", dev, "ingress"]);
  if (filters.ok && new RegExp(`\\b${tap.replaceAll(".", "\\.")}\\b`).test(filters.stdout)) {
    await runInNetns(netns, "tc", ["qdisc", "del", "dev", dev, "ingress"]);
    if (txqlen !== undefined && Number.isInteger(txqlen) && txqlen >= 0) {
      await runInNetns(netns, "ip", ["link", "set", "dev", dev, "txqueuelen", String(txqlen)]);
    }
  }
  await runInNetns(netns, "ip", ["link", "del", tap]);
}

/**
 * Hands the pod interface of `netns` to a VM: creates `tap` (MTU of the pod interface, up),
 * ingress qdiscs on both and a match-all redirect each way. Refuses an interface that already
 * has an ingress qdisc (another VM or tool owns its ingress), and the host's own netns
 * (HostNetnsError). Undone on failure.
 */
export async function startTcRedirect(netns: NetnsPath, tap = newTapName()): Promise<TcRedirect> {
  refuseHostNetns(netns, "handing the pod interface to a VM (tc redirect)");
  if (!IFNAME_RE.test(tap)) throw new TcRedirectError(`tap name ${JSON.stringify(tap)}: invalid`);
  const pod = await readPodInterface(netns);
  const qdiscs = await must(netns, "tc", ["-j", "qdisc", "show", "dev", pod.name]);
  if (/"kind":\s*"(ingress|clsact)"/.test(qdiscs)) {
    throw new TcRedirectError(
      `netns ${netns}: ${pod.name} already has an ingress qdisc (another VM or tool redirects ` +
        `its traffic); nerdbox hands a pod interface to one VM only`,
    );
  }
  const undo = () => undoTcRedirect(netns, tap, pod.name, pod.txqlen);
  try {
    await must(netns, "ip", ["tuntap", "add", "dev", tap, "mode", "tap"]);
    await must(netns, "ip", ["link", "set", "dev", tap, "mtu", String(pod.mtu), "up"]);
    await must(netns, "tc", ["qdisc", "add", "dev", tap, "ingress"]);
    await must(netns, "tc", ["qdisc", "add", "dev", pod.name, "ingress"]);
    await must(netns, "tc", redirectArgs(pod.name, tap));
    await must(netns, "tc", redirectArgs(tap, pod.name));
  } catch (e) {
    await undo();
    throw e;
  }
  return { tap, pod, undo };
}
