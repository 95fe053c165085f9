/**
 * Pods through CRI (issue 12), nerdbox next to runc in one run (interleaved rounds, same load, the
 * same private containerd with CRI, tests/helpers/cri_node.ts), driven with crictl as a kubelet
 * would drive CRI:
 *  - pod start: RunPodSandbox → first container running (CreateContainer + StartContainer of a
 *    busybox `sleep`), each call timed;
 *  - per-container start in the running pod: CreateContainer + StartContainer of a 2nd and a 3rd
 *    container (for nerdbox: inside the pod's VM, no boot);
 *  - memory per pod at 1 pod with 2 containers: PSS (/proc/PID/smaps_rollup) of the shim serving
 *    the pod and of every process below it (nerdbox: the shim daemon, QEMU, virtiofsd, passt;
 *    runc: the shim, the pause process and the containers' processes);
 *  - after each pod: StopPodSandbox + RemovePodSandbox, then nothing of it may be left (no shim,
 *    no process of its tree, no pod or container in CRI).
 * Times include one crictl start-up per call (a static Go binary, a few ms) for both runtimes.
 * `deno task bench` runs it as one bench case; or directly (root; containerd, runc, QEMU, the CRI
 * kit's crictl): `flock /tmp/nerdbox-heavy.lock bin/deno run -A bench/pod_bench.ts [rounds]`.
 */
import {
  containerConfig,
  type CriNode,
  type CriRuntime,
  podConfig,
  startCriNode,
} from "../tests/helpers/cri_node.ts";
import { shimPidsOf } from "../tests/helpers/procs.ts";
import { reportEntry } from "./report_entry.ts";

const RUNTIMES: CriRuntime[] = ["runc", "nerdbox"];
/** Containers started after the first, in the running pod. */
const LATER_CONTAINERS = 2;
/** Time for the pod's processes to settle before their memory is read. */
const SETTLE_MS = 5_000;
/** How long a removed pod's processes may take to go. */
const GONE_MS = 30_000;

/** One pod's figures. */
interface PodRound {
  runPodMs: number;
  createFirstMs: number;
  startFirstMs: number;
  /** CreateContainer / StartContainer of each later container. */
  createLaterMs: number[];
  startLaterMs: number[];
  /** Memory at 1 pod with 2 containers. */
  mem: TreeMemory;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s[Math.floor((s.length - 1) / 2)];
}

async function timed<T>(f: () => Promise<T>): Promise<[T, number]> {
  const t = performance.now();
  const v = await f();
  return [v, performance.now() - t];
}

/** Every process below `pid` (by /proc/PID/task/TID/children), depth first. */
function descendants(pid: number): number[] {
  const out: number[] = [];
  let tasks: string[] = [];
  try {
    tasks = [...Deno.readDirSync(`/proc/${pid}/task`)].map((e) => e.name);
  } catch { /* gone */ }
  for (const tid of tasks) {
    let text = "";
    try {
      text = Deno.readTextFileSync(`/proc/${pid}/task/${tid}/children`);
    } catch { /* gone */ }
    for (const c of text.split(" ").filter(Boolean).map(Number)) {
      out.push(c, ...descendants(c));
    }
  }
  return out;
}

/** A process's PSS in KiB: all, and its anonymous, file-backed and shared-memory parts. */
interface Pss {
  all: number;
  anon: number;
  file: number;
  shmem: number;
}

/** The PSS of `pid` (/proc/PID/smaps_rollup), or undefined when it is gone. */
function pssKiB(pid: number): Pss | undefined {
  try {
    const text = Deno.readTextFileSync(`/proc/${pid}/smaps_rollup`);
    const field = (name: string) =>
      Number(new RegExp(`^${name}:\\s+(\\d+) kB`, "m").exec(text)?.[1] ?? NaN);
    return {
      all: field("Pss"),
      anon: field("Pss_Anon"),
      file: field("Pss_File"),
      shmem: field("Pss_Shmem"),
    };
  } catch {
    return undefined;
  }
}

function commOf(pid: number): string {
  try {
    return Deno.readTextFileSync(`/proc/${pid}/comm`).trim();
  } catch {
    return "?";
  }
}

/** The shims of `node` (one per pod) and every process below them. */
async function podTree(node: CriNode): Promise<{ shims: number[]; below: number[] }> {
  const shims = await shimPidsOf(node.address);
  return { shims, below: shims.flatMap(descendants) };
}

/** The memory figures of a pod's process tree. */
interface TreeMemory {
  /** PSS in KiB by process name (the shims as `shim`, the rest by comm). */
  pssKiB: Map<string, number>;
  /** How many processes had each name. */
  procCount: Map<string, number>;
  /** The whole tree's PSS by kind (shmem, for nerdbox: the guest RAM memfd). */
  kinds: Omit<Pss, "all">;
}

/** PSS and count by process name, and the shared-memory part of the sum. */
function treePss(tree: { shims: number[]; below: number[] }): TreeMemory {
  const mem: TreeMemory = {
    pssKiB: new Map(),
    procCount: new Map(),
    kinds: { anon: 0, file: 0, shmem: 0 },
  };
  const add = (name: string, pid: number) => {
    const kib = pssKiB(pid);
    if (kib === undefined) return;
    mem.pssKiB.set(name, (mem.pssKiB.get(name) ?? 0) + kib.all);
    mem.procCount.set(name, (mem.procCount.get(name) ?? 0) + 1);
    mem.kinds.anon += kib.anon;
    mem.kinds.file += kib.file;
    mem.kinds.shmem += kib.shmem;
  };
  for (const p of tree.shims) add("shim", p);
  for (const p of tree.below) add(commOf(p), p);
  return mem;
}

function alive(pid: number): boolean {
  try {
    Deno.statSync(`/proc/${pid}`);
    return true;
  } catch {
    return false;
  }
}

/** Throws naming what is left of the pod unless CRI and the host are clean within GONE_MS. */
async function expectGone(node: CriNode, rt: CriRuntime, pids: number[]): Promise<void> {
  const deadline = Date.now() + GONE_MS;
  while (true) {
    const left = [...pids.filter(alive), ...await shimPidsOf(node.address)];
    const pods = await node.crictlOk(["pods", "-q"]);
    const ctrs = await node.crictlOk(["ps", "-aq"]);
    if (left.length === 0 && pods === "" && ctrs === "") return;
    if (Date.now() > deadline) {
      throw new Error(
        `${rt}: after stopp/rmp, left: processes [${
          [...new Set(left)].map((p) => `${p} ${commOf(p)}`).join(", ")
        }], pods [${pods}], containers [${ctrs}]`,
      );
    }
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** One pod of `rt`: timed start, later containers, memory, cleanup checked. */
async function podRound(node: CriNode, rt: CriRuntime, tag: string): Promise<PodRound> {
  const pod = podConfig(`bench-${rt}-${tag}`);
  const ctr = (n: number) => containerConfig(`c${n}`, ["/bin/sleep", "3600"]);
  let podId: string | undefined;
  let tree: { shims: number[]; below: number[] } = { shims: [], below: [] };
  let round: PodRound;
  try {
    const [id, runPodMs] = await timed(() => node.runPod(pod, rt));
    podId = id;
    const [c1, createFirstMs] = await timed(() => node.createContainer(id, ctr(1), pod));
    const [, startFirstMs] = await timed(() => node.startContainer(c1));
    await expectRunning(node, c1);
    const createLaterMs: number[] = [];
    const startLaterMs: number[] = [];
    let mem = treePss({ shims: [], below: [] });
    for (let n = 2; n < 2 + LATER_CONTAINERS; n++) {
      const [c, createMs] = await timed(() => node.createContainer(id, ctr(n), pod));
      const [, startMs] = await timed(() => node.startContainer(c));
      await expectRunning(node, c);
      createLaterMs.push(createMs);
      startLaterMs.push(startMs);
      if (n === 2) { // 1 pod with 2 containers: its memory
        await new Promise((r) => setTimeout(r, SETTLE_MS));
        tree = await podTree(node);
        mem = treePss(tree);
      }
    }
    tree = await podTree(node);
    round = { runPodMs, createFirstMs, startFirstMs, createLaterMs, startLaterMs, mem };
  } catch (err) {
    // Leave nothing behind, but report what failed first.
    const ids = podId ?? await node.crictlOk(["pods", "-q", "--name", pod.metadata.name]);
    for (const id of ids.split("\n").filter(Boolean)) await node.removePod(id).catch(() => {});
    throw err;
  }
  await node.removePod(podId);
  await expectGone(node, rt, [...tree.shims, ...tree.below]);
  return round;
}

async function expectRunning(node: CriNode, id: string): Promise<void> {
  const state = JSON.parse(await node.crictlOk(["inspect", "-o", "json", id])).status?.state;
  if (state !== "CONTAINER_RUNNING") throw new Error(`container ${id}: state ${state} after start`);
}

const KIND_LABEL = {
  anon: "anonymous (Pss_Anon)",
  file: "file-backed (Pss_File)",
  shmem: "shmem (Pss_Shmem; nerdbox: guest RAM)",
};
const ms = (x: number) => `${x.toFixed(0)} ms`;
const mib = (k: number) => `${(k / 1024).toFixed(1)} MiB`;

function row(label: string, a: string, b: string, ratio: number | string): string {
  const r = typeof ratio === "string"
    ? ratio
    : Number.isFinite(ratio)
    ? `${ratio.toFixed(1)}×`
    : "";
  return `  ${label.padEnd(52)} ${a.padStart(10)} ${b.padStart(11)} ${r.padStart(7)}`.trimEnd();
}

/** The report of `rounds` interleaved pods per runtime (after one untimed warm-up pod each). */
async function podBench(rounds: number): Promise<string> {
  const node = await startCriNode();
  const all: Record<CriRuntime, PodRound[]> = { runc: [], nerdbox: [] };
  try {
    for (const rt of RUNTIMES) await podRound(node, rt, "warmup");
    for (let i = 0; i < rounds; i++) {
      const order = i % 2 === 0 ? RUNTIMES : [...RUNTIMES].reverse();
      for (const rt of order) all[rt].push(await podRound(node, rt, String(i)));
    }
  } finally {
    await node.stop();
  }
  const med = (rt: CriRuntime, f: (r: PodRound) => number) => median(all[rt].map(f));
  const line = (label: string, f: (r: PodRound) => number) => {
    const a = med("runc", f);
    const b = med("nerdbox", f);
    return row(label, ms(a), ms(b), b / a);
  };
  const later = (xs: number[]) => median(xs);
  const names = [
    ...new Set(RUNTIMES.flatMap((rt) => all[rt].flatMap((r) => [...r.mem.pssKiB.keys()]))),
  ];
  const memTotal = (rt: CriRuntime) =>
    med(rt, (r) => [...r.mem.pssKiB.values()].reduce((a, b) => a + b, 0));
  const podStart = med("nerdbox", (r) => r.runPodMs + r.createFirstMs + r.startFirstMs);
  const bootWait = med("nerdbox", (r) => r.startFirstMs - later(r.startLaterMs));
  const load = (await Deno.readTextFile("/proc/loadavg")).split(" ")[0];
  return [
    "",
    `pods through CRI (containerd ${node.line}, crictl), nerdbox on QEMU/TCG; ${rounds} ` +
    `interleaved rounds after 1 warm-up pod each, medians; load ${load}`,
    row("", "runc", "nerdbox", "ratio"),
    line(
      "pod start: RunPodSandbox → 1st container running",
      (r) => r.runPodMs + r.createFirstMs + r.startFirstMs,
    ),
    line("  RunPodSandbox", (r) => r.runPodMs),
    line("  CreateContainer (1st)", (r) => r.createFirstMs),
    line("  StartContainer (1st)", (r) => r.startFirstMs),
    line(
      `later container in the running pod (2nd, 3rd)`,
      (r) => later(r.createLaterMs.map((c, i) => c + r.startLaterMs[i])),
    ),
    line("  CreateContainer", (r) => later(r.createLaterMs)),
    line("  StartContainer", (r) => later(r.startLaterMs)),
    `  nerdbox's 1st StartContainer waits for the VM to boot: ${ms(bootWait)} more than a later ` +
    `one (${(bootWait / podStart * 100).toFixed(0)} % of its pod start)`,
    "",
    `memory per pod, 1 pod with 2 containers (PSS of the pod's shim and every process below it)`,
    row(
      "total",
      mib(memTotal("runc")),
      mib(memTotal("nerdbox")),
      memTotal("nerdbox") / memTotal("runc"),
    ),
    ...(["anon", "file", "shmem"] as const).map((k) =>
      row(
        `  of which ${KIND_LABEL[k]}`,
        mib(med("runc", (r) => r.mem.kinds[k])),
        mib(med("nerdbox", (r) => r.mem.kinds[k])),
        NaN,
      )
    ),
    ...names.map((n) => {
      const a = med("runc", (r) => r.mem.pssKiB.get(n) ?? 0);
      const b = med("nerdbox", (r) => r.mem.pssKiB.get(n) ?? 0);
      const count = (rt: CriRuntime) => all[rt].at(-1)?.mem.procCount.get(n) ?? 0;
      return row(
        `  ${n} (runc ×${count("runc")}, nerdbox ×${count("nerdbox")})`,
        a ? mib(a) : "–",
        b ? mib(b) : "–",
        NaN,
      );
    }),
  ].join("\n");
}

await reportEntry(import.meta, "pod", "POD_BENCH_ROUNDS", podBench);
