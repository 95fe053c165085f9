/**
 * Who owns a run's state dir, and cleaning up after runs whose owner died (SIGKILL): each QEMU
 * run records in `<stateDir>/owner.json` the nerdbox process that owns it, the QEMU and passt
 * processes it started and the tc redirect it set up in a caller's netns (pids with their start
 * times, so a reused pid is never mistaken for them). The next VM start sweeps the sibling dirs
 * whose owner is gone: kills what still runs, undoes the redirect, removes the dir. A process the
 * record missed (its owner died between spawning it and saving the record) is still found: by the
 * dead run's socket paths on its command line (runProcesses).
 */
import { undoTcRedirect } from "../net/tc_redirect.ts";
import { validateNetnsPath } from "../net/netns.ts";
import { removeTsiCgroup } from "./tsi_guard.ts";
import { isAlive, type ProcRef, procRef } from "../proc.ts";

/** What `owner.json` holds. */
export interface RunRecord {
  version: 1;
  owner: ProcRef;
  qemu?: ProcRef;
  passt?: ProcRef;
  /** virtio-fs daemons (lib/vm/virtiofs.ts), one per shared directory. */
  virtiofsd?: ProcRef[];
  /** The caller's netns the run redirected an interface in. */
  netns?: string;
  tcRedirect?: { tap: string; dev: string; txqlen?: number };
}

/** The record's file name inside a state dir. */
export const RUN_RECORD_FILE = "owner.json";

/** Writes the record atomically (tmp + rename). */
export async function writeRunRecord(stateDir: string, rec: RunRecord): Promise<void> {
  const tmp = `${stateDir}/.${RUN_RECORD_FILE}.tmp`;
  await Deno.writeTextFile(tmp, JSON.stringify(rec), { mode: 0o600 });
  await Deno.rename(tmp, `${stateDir}/${RUN_RECORD_FILE}`);
}

/**
 * Creates the root of run state dirs (e.g. /run/nerdbox, on a fresh tmpfs after every reboot) as
 * 0711, and repairs a root this user owns that lacks that mode: only the owner lists it, but a
 * private passt running as nobody must traverse it to its socket dir inside a run's state dir.
 */
export async function ensureStateRoot(root: string): Promise<void> {
  await Deno.mkdir(root, { recursive: true, mode: 0o711 });
  const st = await Deno.stat(root);
  if (((st.mode ?? 0) & 0o777) !== 0o711 && st.uid === Deno.uid()) await Deno.chmod(root, 0o711);
}

/**
 * Creates a fresh run state dir (0700) under `root` named `<prefix>…` and writes its record with
 * this process as the owner at once: a run killed at any later point is swept by the next one.
 */
export async function createRunStateDir(root: string, prefix: string): Promise<string> {
  const dir = await Deno.makeTempDir({ dir: root, prefix });
  try {
    await writeRunRecord(dir, { version: 1, owner: procRef(Deno.pid)! });
  } catch (err) {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    throw err;
  }
  return dir;
}

function isRef(v: unknown): v is ProcRef {
  const r = v as ProcRef;
  return typeof v === "object" && v !== null && Number.isInteger(r.pid) && r.pid > 1 &&
    typeof r.start === "string" && /^\d+$/.test(r.start);
}

/** Parses a record; undefined for anything that is not one (such a dir is never touched). */
export function parseRunRecord(text: string): RunRecord | undefined {
  let v: Record<string, unknown>;
  try {
    v = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof v !== "object" || v === null || v.version !== 1 || !isRef(v.owner)) return undefined;
  const rec: RunRecord = { version: 1, owner: v.owner };
  if (isRef(v.qemu)) rec.qemu = v.qemu;
  if (isRef(v.passt)) rec.passt = v.passt;
  if (Array.isArray(v.virtiofsd)) {
    const refs = v.virtiofsd.filter(isRef);
    if (refs.length > 0) rec.virtiofsd = refs;
  }
  const tc = v.tcRedirect as { tap?: unknown; dev?: unknown; txqlen?: unknown } | undefined;
  if (
    typeof v.netns === "string" && typeof tc === "object" && tc !== null &&
    typeof tc.tap === "string" && typeof tc.dev === "string"
  ) {
    rec.netns = v.netns;
    rec.tcRedirect = { tap: tc.tap, dev: tc.dev };
    if (Number.isInteger(tc.txqlen) && (tc.txqlen as number) >= 0) {
      rec.tcRedirect.txqlen = tc.txqlen as number;
    }
  }
  return rec;
}

function kill(ref: ProcRef | undefined, group: boolean): void {
  if (!ref || !isAlive(ref)) return;
  for (const target of group ? [-ref.pid, ref.pid] : [ref.pid]) {
    try {
      Deno.kill(target, "SIGKILL");
      return;
    } catch {
      // try the next form
    }
  }
}

/**
 * The command-line arguments that mark a process as started for the run in `dir`: passt's
 * `-s <dir>/passt/passt.sock`, QEMU's channel chardev `path=<dir>/ctl/sock` (commas doubled by
 * QEMU's option escaping), virtiofsd's `--socket-path=<dir>/ctl/…`.
 */
export function runArgMarkers(dir: string): { exact: string[]; contains: string[] } {
  const q = dir.replaceAll(",", ",,");
  return {
    exact: [`${dir}/passt/passt.sock`],
    contains: [`path=${q}/ctl/sock,`, `path=${q}/ctl.sock,`, `--socket-path=${dir}/ctl/`],
  };
}

/** The running processes whose command line names the run dir `dir` (see runArgMarkers). */
export async function runProcesses(dir: string): Promise<ProcRef[]> {
  const { exact, contains } = runArgMarkers(dir);
  const found: ProcRef[] = [];
  let entries: Deno.DirEntry[];
  try {
    entries = await Array.fromAsync(Deno.readDir("/proc"));
  } catch {
    return found;
  }
  for (const e of entries) {
    if (!/^\d+$/.test(e.name)) continue;
    const pid = Number(e.name);
    if (pid <= 1 || pid === Deno.pid) continue;
    let argv: string[];
    try {
      argv = (await Deno.readTextFile(`/proc/${pid}/cmdline`)).split("\0");
    } catch {
      continue; // gone meanwhile, or a kernel thread
    }
    const hit = argv.some((a) => exact.includes(a) || contains.some((c) => a.includes(c)));
    if (!hit) continue;
    const ref = procRef(pid);
    if (ref && isAlive(ref)) found.push(ref);
  }
  return found;
}

/** Cleans one dead run's leftovers and removes its dir (idempotent). */
export async function cleanDeadRun(dir: string, rec: RunRecord): Promise<void> {
  kill(rec.qemu, true);
  kill(rec.passt, false);
  for (const ref of rec.virtiofsd ?? []) kill(ref, false);
  // What the record missed (the owner died between a spawn and saving the record).
  for (const ref of await runProcesses(dir)) kill(ref, false);
  if (rec.netns && rec.tcRedirect) {
    let valid = true;
    try {
      validateNetnsPath(rec.netns, "recorded netns");
    } catch {
      valid = false; // the netns is gone (or no longer a netns): nothing left in it
    }
    const { tap, dev, txqlen } = rec.tcRedirect;
    if (valid) await undoTcRedirect(rec.netns, tap, dev, txqlen);
  }
  await removeTsiCgroup(dir); // a libkrun VMM's guard cgroup (lib/vm/tsi_guard.ts)
  await Deno.remove(dir, { recursive: true }).catch(() => {});
}

/**
 * Sweeps the dirs under `root` (except `keep`) whose record names an owner that is gone. Dirs
 * without a valid record are left alone. Returns the dirs removed.
 */
export async function sweepDeadRuns(root: string, keep?: string): Promise<string[]> {
  const swept: string[] = [];
  let entries: Deno.DirEntry[];
  try {
    entries = await Array.fromAsync(Deno.readDir(root));
  } catch {
    return swept;
  }
  for (const e of entries) {
    if (!e.isDirectory) continue;
    const dir = `${root}/${e.name}`;
    if (dir === keep) continue;
    const text = await Deno.readTextFile(`${dir}/${RUN_RECORD_FILE}`).catch(() => undefined);
    const rec = text === undefined ? undefined : parseRunRecord(text);
    if (!rec || isAlive(rec.owner)) continue;
    await cleanDeadRun(dir, rec);
    swept.push(dir);
  }
  return swept;
}
