/**
 * Test helpers for guest/: a busybox rootfs as an ext4 image on a loop device, named network
 * namespaces with veth pairs, and a host-side channel peer that runs guest/main.ts in dev mode.
 */
import {
  decodeJson,
  encodeFrame,
  encodeJsonFrame,
  type Frame,
  FrameDecoder,
  type GuestConfig,
  MsgType,
} from "../../lib/guest_protocol.ts";
import { concat } from "../../guest/netlink.ts";
import { killAfter } from "../../lib/helper_process.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
/** The repository's Deno. */
export const DENO = `${ROOT}bin/deno`;
/** The guest entry point. */
export const GUEST_MAIN = `${ROOT}guest/main.ts`;

/** Deno running guest/main.ts on the host, talking over the channel socket `sock`. */
export function guestInitArgv(sock: string, workDir: string): string[] {
  return [
    DENO,
    "run",
    "-A",
    "--no-check",
    "--cached-only",
    "--no-config",
    GUEST_MAIN,
    "--channel",
    sock,
    "--work-dir",
    workDir,
  ];
}

/** Runs a command (argv, no shell); throws with its stderr on failure; returns stdout. */
export async function run(cmd: string, args: string[], allowFail = false): Promise<string> {
  const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  const text = new TextDecoder().decode(out.stdout);
  if (!out.success && !allowFail) {
    throw new Error(
      `${cmd} ${args.join(" ")} failed (${out.code}): ${new TextDecoder().decode(out.stderr)}`,
    );
  }
  return text;
}

/** Applets linked in the test rootfs. */
const APPLETS = [
  "sh",
  "true",
  "false",
  "cat",
  "echo",
  "ip",
  "hostname",
  "sleep",
  "ls",
  "id",
  "pwd",
  "env",
  "touch",
  "kill",
  "tty",
  "test",
  "[",
];

/** Makes a busybox rootfs directory under `dir`. */
export async function makeRootfsDir(dir: string): Promise<string> {
  const root = `${dir}/rootfs`;
  for (const d of ["bin", "etc", "tmp", "proc", "sys", "dev", "work"]) {
    await Deno.mkdir(`${root}/${d}`, { recursive: true });
  }
  await Deno.copyFile("/bin/busybox", `${root}/bin/busybox`);
  await Deno.chmod(`${root}/bin/busybox`, 0o755);
  for (const a of APPLETS) await Deno.symlink("busybox", `${root}/bin/${a}`);
  await Deno.writeTextFile(`${root}/etc/passwd`, "root:x:0:0:root:/:/bin/sh\n");
  await Deno.writeTextFile(`${root}/bin/noexec`, "#!/bin/sh\necho no\n", { mode: 0o644 });
  return root;
}

/** An ext4 image of a busybox rootfs attached read-only to a loop device. */
export interface LoopRootfs {
  device: string;
  detach(): Promise<void>;
}

/** Builds the image with mke2fs -d and attaches it with losetup. */
export async function makeLoopRootfs(dir: string): Promise<LoopRootfs> {
  const root = await makeRootfsDir(dir);
  const img = `${dir}/rootfs.ext4`;
  await run("mke2fs", ["-q", "-t", "ext4", "-O", "^has_journal", "-d", root, img, "16M"]);
  const device = (await run("losetup", ["--find", "--show", "--read-only", img])).trim();
  return { device, detach: () => run("losetup", ["-d", device], true).then(() => {}) };
}

/** Runs `fn` with a fresh loop rootfs (in a temp dir named after `prefix`), detached after. */
export async function withLoopRootfs(
  prefix: string,
  fn: (rootfs: LoopRootfs) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix });
  let rootfs: LoopRootfs | undefined;
  try {
    rootfs = await makeLoopRootfs(dir);
    await fn(rootfs);
  } finally {
    await rootfs?.detach();
    await Deno.remove(dir, { recursive: true });
  }
}

/** The runGuest prefix that runs the guest in netns `ns` with private mount and UTS namespaces. */
export function inNetns(ns: string): string[] {
  return ["ip", "netns", "exec", ns, "unshare", "-m", "-u"];
}

/** Adds a veth pair `name` (with `mac`) / `peer` inside netns `ns`. */
export async function addVeth(ns: string, name: string, mac: string, peer: string): Promise<void> {
  await run("ip", [
    "-n",
    ns,
    "link",
    "add",
    name,
    "address",
    mac,
    "type",
    "veth",
    "peer",
    "name",
    peer,
  ]);
}

/** A named network namespace (`ip netns add`), deleted by `remove`. */
export async function makeNetns(name: string): Promise<{ name: string; remove(): Promise<void> }> {
  await run("ip", ["netns", "del", name], true);
  await run("ip", ["netns", "add", name]);
  return { name, remove: () => run("ip", ["netns", "del", name], true).then(() => {}) };
}

/** What a dev-mode guest run produced. */
export interface GuestRun {
  frames: Frame[];
  code: number;
  signal: Deno.Signal | null;
  stderr: string;
  stdoutOf(proc?: number): string;
  json<T>(type: number, proc?: number): T | undefined;
}

/** Options for runGuest. */
export interface RunGuestOptions {
  config: GuestConfig;
  /** Command prefix that places the guest (e.g. ["ip","netns","exec",ns,"unshare","-m","-u"]). */
  prefix: string[];
  /** Called for each frame with a sender; lets a test send STDIN/SIGNAL/EXEC. */
  onFrame?: (f: Frame, send: (b: Uint8Array) => Promise<void>, pid: number) => void | Promise<void>;
  timeoutMs?: number;
  /** Pass the config with `--config FILE` instead of a CONFIG frame. */
  configFile?: boolean;
}

/** Runs guest/main.ts in dev mode against a real unix-socket peer; returns frames and status. */
export async function runGuest(o: RunGuestOptions): Promise<GuestRun> {
  const dir = await Deno.makeTempDir({ prefix: "guest-init-" });
  const sock = `${dir}/ctl.sock`;
  const listener = Deno.listen({ transport: "unix", path: sock });
  const frames: Frame[] = [];
  const extra: string[] = [];
  if (o.configFile) {
    await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(o.config));
    extra.push("--config", `${dir}/config.json`);
  }
  const child = new Deno.Command(o.prefix[0], {
    args: [
      ...o.prefix.slice(1),
      ...guestInitArgv(sock, `${dir}/work`),
      ...extra,
    ],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const cancelKill = killAfter(child, o.timeoutMs ?? 60_000);
  const peer = (async () => {
    const conn = await listener.accept();
    const send = async (b: Uint8Array) => {
      let off = 0;
      while (off < b.length) off += await conn.write(b.subarray(off));
    };
    const dec = new FrameDecoder();
    try {
      for await (const chunk of conn.readable) {
        for (const f of dec.push(chunk)) {
          frames.push(f);
          if (f.type === MsgType.HELLO && !o.configFile) {
            await send(encodeJsonFrame(MsgType.CONFIG, 0, o.config));
          }
          await o.onFrame?.(f, send, child.pid);
        }
      }
    } catch { /* the guest went away */ }
  })();
  try {
    const [status, out, err] = await Promise.all([
      child.status,
      new Response(child.stdout).text(),
      new Response(child.stderr).text(),
    ]);
    await Promise.race([peer, new Promise((r) => setTimeout(r, 1000))]);
    void out;
    return {
      frames,
      code: status.code,
      signal: status.signal,
      stderr: err,
      stdoutOf: (proc = 0) =>
        new TextDecoder().decode(
          concat(
            frames.filter((f) => f.proc === proc && f.type === MsgType.STDOUT).map((f) =>
              f.payload
            ),
          ),
        ),
      json: <T>(type: number, proc = 0) => {
        const f = frames.find((x) => x.type === type && x.proc === proc);
        return f ? decodeJson<T>(f.payload) : undefined;
      },
    };
  } finally {
    cancelKill();
    listener.close();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

/** Encodes a JSON frame (re-export for tests). */
export { encodeFrame, encodeJsonFrame };
