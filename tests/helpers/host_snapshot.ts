/**
 * A before/after snapshot of everything nerdbox could leave behind on the host, and a diff:
 * processes of nerdbox/QEMU/passt/gvproxy/shims, mounts, network namespaces (/run/netns and nsfs
 * mounts), links, addresses, routes, qdiscs, iptables rules (no counters) and nftables tables, entries
 * and UNIX sockets under /run/nerdbox*, and temp entries in the image cache. Lines are normalised (no counters, no
 * lifetimes) so that a diff shows only what appeared or vanished. Tests running in parallel on a
 * shared machine scope the diff with `only` (e.g. their unique sandbox id) or pick `aspects`.
 */
import { listProcesses, procStat } from "./procs.ts";
import { makeBusyboxRootfs } from "./rootfs.ts";

/** One labelled, sorted list of lines per aspect of host state. */
export type HostSnapshot = Record<string, string[]>;

/** Every aspect a snapshot records. */
export const ASPECTS = [
  "processes",
  "mounts",
  "netns",
  "links",
  "addrs",
  "routes",
  "qdiscs",
  "iptables",
  "runFiles",
  "cacheTemp",
] as const;

/** One aspect name. */
export type Aspect = typeof ASPECTS[number];

/** What to record. */
export interface SnapshotOptions {
  /** Aspects to record (default: all). */
  aspects?: readonly Aspect[];
  /** Image cache to look for half-written entries in (default NERDBOX_CACHE_DIR or nerdbox's). */
  cacheDir?: string;
}

const PROCESS_RE = /nerdbox|qemu-system|passt|gvproxy|containerd-shim/;

async function out(cmd: string, args: string[]): Promise<string> {
  try {
    const o = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "null" }).output();
    return o.success ? new TextDecoder().decode(o.stdout) : "";
  } catch {
    return ""; // tool missing: the aspect stays empty on both sides
  }
}

function lines(text: string): string[] {
  return text.split("\n").map((l) => l.trimEnd()).filter((l) => l !== "" && !l.startsWith("#"));
}

async function ppidOf(pid: number): Promise<number | undefined> {
  const stat = await procStat(pid);
  return stat ? Number(stat[1]) : undefined;
}

/** This process and its ancestors (never reported as leaks). */
async function selfAndAncestors(): Promise<Set<number>> {
  const out = new Set<number>();
  let pid: number | undefined = Deno.pid;
  while (pid !== undefined && pid > 1 && !out.has(pid)) {
    out.add(pid);
    pid = await ppidOf(pid);
  }
  return out;
}

/** `pid ppid cmdline` of every nerdbox-related process (not this test or its ancestors). */
export async function nerdboxProcesses(): Promise<string[]> {
  const skip = await selfAndAncestors();
  const found: string[] = [];
  for (const p of await listProcesses()) {
    if (skip.has(p.pid)) continue;
    const cmd = p.argv.filter((a) => a !== "").join(" ");
    if (!PROCESS_RE.test(cmd)) continue;
    const stat = await procStat(p.pid);
    if (!stat) continue;
    found.push(stat[0] === "Z" ? `${p.pid} zombie ${cmd}` : `${p.pid} ${cmd}`);
  }
  return found.sort();
}

/** `mountpoint fstype source` of every mount (mountinfo). */
async function mounts(): Promise<string[]> {
  return lines(await Deno.readTextFile("/proc/self/mountinfo")).map((l) => {
    const [pre, post] = l.split(" - ");
    const mp = pre.split(" ")[4];
    const [fstype, source] = post.split(" ");
    return `${mp} ${fstype} ${source}`;
  }).sort();
}

async function netns(allMounts: string[]): Promise<string[]> {
  const names: string[] = [];
  try {
    for await (const e of Deno.readDir("/run/netns")) names.push(`/run/netns/${e.name}`);
  } catch { /* none */ }
  const nsfs = allMounts.filter((m) => m.split(" ")[1] === "nsfs").map((m) => `nsfs ${m}`);
  return [...names, ...nsfs].sort();
}

/** Entries (dirs, sockets, files) under /run/nerdbox* down to `depth` levels. */
async function runFiles(depth = 3): Promise<string[]> {
  const found: string[] = [];
  const walk = async (dir: string, left: number) => {
    let entries;
    try {
      entries = await Array.fromAsync(Deno.readDir(dir));
    } catch {
      return;
    }
    for (const e of entries) {
      const p = `${dir}/${e.name}`;
      let kind = e.isDirectory ? "dir" : e.isSymlink ? "symlink" : "file";
      if (!e.isDirectory && !e.isSymlink) {
        try {
          const st = await Deno.lstat(p);
          if (st.isSocket) kind = "socket";
          else if (st.isFifo) kind = "fifo";
        } catch { /* gone */ }
      }
      found.push(`${kind} ${p}`);
      if (e.isDirectory && left > 1) await walk(p, left - 1);
    }
  };
  for await (const e of Deno.readDir("/run")) {
    if (e.name.startsWith("nerdbox")) {
      found.push(`${e.isDirectory ? "dir" : "file"} /run/${e.name}`);
      if (e.isDirectory) await walk(`/run/${e.name}`, depth);
    }
  }
  return found.sort();
}

async function cacheTemp(dir: string): Promise<string[]> {
  const found: string[] = [];
  try {
    for await (const e of Deno.readDir(dir)) {
      if (e.name.startsWith(".") || e.name.includes(".tmp")) found.push(`${dir}/${e.name}`);
    }
  } catch { /* no cache yet */ }
  return found.sort();
}

/** Takes a snapshot of the host. */
export async function takeHostSnapshot(opts: SnapshotOptions = {}): Promise<HostSnapshot> {
  const want = new Set<Aspect>(opts.aspects ?? ASPECTS);
  const snap: HostSnapshot = {};
  const allMounts = want.has("mounts") || want.has("netns") ? await mounts() : [];
  if (want.has("processes")) snap.processes = await nerdboxProcesses();
  if (want.has("mounts")) snap.mounts = allMounts;
  if (want.has("netns")) snap.netns = await netns(allMounts);
  if (want.has("links")) {
    snap.links = lines(await out("ip", ["-o", "link", "show"]))
      .map((l) => l.replace(/^\d+: /, "").replace(/ qlen \d+/, "")).sort();
  }
  if (want.has("addrs")) {
    snap.addrs = lines(await out("ip", ["-o", "addr", "show"]))
      .map((l) => l.replace(/^\d+: /, "").replace(/\s*valid_lft .*$/, "")).sort();
  }
  if (want.has("routes")) {
    snap.routes = [
      ...lines(await out("ip", ["-4", "route", "show", "table", "all"])),
      ...lines(await out("ip", ["-6", "route", "show", "table", "all"])),
    ].sort();
  }
  if (want.has("qdiscs")) {
    snap.qdiscs = lines(await out("tc", ["qdisc", "show"]))
      .map((l) => l.replace(/ refcnt \d+/, "")).sort();
  }
  if (want.has("iptables")) {
    const noCounters = (t: string) =>
      lines(t).map((l) => l.replace(/\[\d+:\d+\]/g, "[]")).filter((l) => !l.startsWith("#"));
    snap.iptables = [
      ...noCounters(await out("iptables-save", [])).map((l) => `4 ${l}`),
      ...noCounters(await out("ip6tables-save", [])).map((l) => `6 ${l}`),
      ...lines(await out("nft", ["list", "tables"])).map((l) => `nft ${l}`),
    ];
  }
  if (want.has("runFiles")) snap.runFiles = await runFiles();
  if (want.has("cacheTemp")) {
    snap.cacheTemp = await cacheTemp(
      opts.cacheDir ?? Deno.env.get("NERDBOX_CACHE_DIR") ?? "/var/lib/nerdbox/cache",
    );
  }
  return snap;
}

/** How to compare two snapshots. */
export interface DiffOptions {
  /** Only lines matching this count (e.g. a test's unique id); default: every line. */
  only?: RegExp;
  /** Lines matching this are ignored (other tests' objects). */
  ignore?: RegExp;
  /** Report only what appeared (default true: things that vanished are rarely nerdbox's doing). */
  addedOnly?: boolean;
}

/** Human-readable differences ("" when none): `aspect:` then `+ line` / `- line`. */
export function diffHostSnapshots(
  before: HostSnapshot,
  after: HostSnapshot,
  opts: DiffOptions = {},
): string {
  const keep = (l: string) =>
    (opts.only === undefined || opts.only.test(l)) &&
    (opts.ignore === undefined || !opts.ignore.test(l));
  const strip = (l: string) => l.replace(/^\d+ (zombie )?/, "$1"); // processes: compare by cmdline
  const parts: string[] = [];
  for (const key of Object.keys(after)) {
    const proc = key === "processes";
    const a = new Set((before[key] ?? []).filter(keep).map((l) => proc ? strip(l) : l));
    const b = (after[key] ?? []).filter(keep);
    const added = b.filter((l) => !a.has(proc ? strip(l) : l));
    const bs = new Set(b.map((l) => proc ? strip(l) : l));
    const gone = opts.addedOnly === false ? [...a].filter((l) => !bs.has(l)) : [];
    if (added.length || gone.length) {
      parts.push(
        [`${key}:`, ...added.map((l) => `  + ${l}`), ...gone.map((l) => `  - ${l}`)].join("\n"),
      );
    }
  }
  return parts.join("\n");
}

/** Polls until the scoped diff is empty (cleanup may finish just after exit) or `ms` passes. */
export async function settledDiff(
  before: HostSnapshot,
  opts: DiffOptions & SnapshotOptions = {},
  ms = 5000,
): Promise<string> {
  const deadline = Date.now() + ms;
  while (true) {
    const diff = diffHostSnapshots(before, await takeHostSnapshot(opts), opts);
    if (diff === "" || Date.now() > deadline) return diff;
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** Throws, listing what was left, unless the scoped diff settles to nothing within `ms`. */
export async function assertNothingLeft(
  before: HostSnapshot,
  opts: DiffOptions & SnapshotOptions = {},
  ms = 5000,
  what = "left behind",
): Promise<void> {
  const diff = await settledDiff(before, opts, ms);
  if (diff !== "") throw new Error(`${what}:\n${diff}`);
}

/**
 * Runs `fn` with a busybox rootfs and a unique id (`<prefix>-XXXXXXXX`); afterwards no process, run
 * file or mount naming the id may be left on the host (settling for up to 15 s).
 */
export async function withScopedRun(
  prefix: string,
  fn: (rootfs: string, id: string, dir: string) => Promise<void>,
): Promise<void> {
  const aspects: Aspect[] = ["processes", "runFiles", "mounts"];
  const dir = await Deno.makeTempDir({ prefix: `${prefix}-` });
  const id = `${prefix}-${crypto.randomUUID().slice(0, 8)}`;
  const before = await takeHostSnapshot({ aspects });
  try {
    await makeBusyboxRootfs(`${dir}/rootfs`);
    await fn(`${dir}/rootfs`, id, dir);
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    await assertNothingLeft(before, { aspects, only: new RegExp(id) }, 15_000);
  }
}
