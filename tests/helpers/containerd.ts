/**
 * A private containerd for tests (1.6 = bookworm's package; 1.7 and 2.1 = the private installs of
 * scripts/setup_containerd.ts) (own root, state, sockets; CRI off), with nerdbox's bin/ first
 * on its PATH so it finds containerd-shim-nerdbox-v1, and a busybox OCI image built from the host's
 * static busybox and imported with ctr. Everything is removed again by stop().
 */
import { exists } from "../../lib/fs.ts";
import { shimPidsOf } from "./procs.ts";
import { killAfter } from "../../lib/helper_process.ts";
import { checkErofsHost, EROFS_BIN_DIR, erofsConfigLines } from "./containerd_erofs.ts";
import { sha256File } from "./erofs.ts";

/** The repository root. */
export const REPO = new URL("../../", import.meta.url).pathname.replace(/\/$/, "");
/** nerdbox's runtime name. */
export const RUNTIME = "io.containerd.nerdbox.v1";
/** The test image reference. */
export const IMAGE = "localhost/bbtest:latest";

/** containerd release lines the tests run against. */
export type ContainerdLine = "1.6" | "1.7" | "2.1";

/** Every line the shim integration tests cover. */
export const CONTAINERD_LINES: ContainerdLine[] = ["1.6", "1.7", "2.1"];

/** The directory holding `containerd` and `ctr` for `line`. */
export function containerdBinDir(line: ContainerdLine): string {
  return line === "1.6" ? "/usr/bin" : `/opt/nerdbox/containerd-${line}/usr/bin`;
}

/** Result of one ctr invocation. */
export interface CtrResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** A running private containerd. */
export interface Containerd {
  name: string;
  /** The release line this containerd is. */
  line: ContainerdLine;
  /** The `ctr` binary matching this containerd. */
  ctrBin: string;
  /** gRPC socket (`ctr -a`). */
  address: string;
  /** containerd's ttrpc socket (the shims' TTRPC_ADDRESS). */
  ttrpcAddress: string;
  root: string;
  state: string;
  /** containerd's own log (with what the shims write to their `log` fifos). */
  logPath: string;
  pid: number;
  /** Runs `ctr -a ADDRESS ARGS…` with stdin /dev/null. */
  ctr(args: string[], opts?: { timeoutMs?: number }): Promise<CtrResult>;
  /** Spawns `ctr -a ADDRESS ARGS…` in the background (stdout/stderr piped). */
  spawnCtr(args: string[]): Deno.ChildProcess;
  /** The bundle directory containerd gives container `id` in namespace `ns`. */
  bundleDir(id: string, ns?: string): string;
  /** Stops containerd and removes its root and state (unmounting what is left). */
  stop(): Promise<void>;
}

const dec = new TextDecoder();

async function run(bin: string, args: string[], opts: { env?: Record<string, string> } = {}) {
  const out = await new Deno.Command(bin, { args, stdin: "null", ...opts }).output();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** Mount points at or below `dir`, deepest first. */
export async function mountsUnder(dir: string): Promise<string[]> {
  const text = await Deno.readTextFile("/proc/self/mountinfo");
  return text.split("\n").filter(Boolean)
    .map((l) =>
      l.split(" ")[4].replace(/\\([0-7]{3})/g, (_, o) => String.fromCharCode(parseInt(o, 8)))
    )
    .filter((p) => p === dir || p.startsWith(`${dir}/`))
    .sort((a, b) => b.length - a.length);
}

async function cleanDir(dir: string): Promise<void> {
  for (const m of await mountsUnder(dir)) await run("umount", ["-l", m]);
  await Deno.remove(dir, { recursive: true }).catch(() => {});
}

/** Extra features of the test containerd. */
export interface ContainerdOptions {
  /** TOML appended to the config; when set, the CRI plugin is left enabled (cri_node.ts). */
  criConfig?: string;
  /** Also run the erofs snapshotter and differ (2.x only; tests/helpers/containerd_erofs.ts). */
  erofs?: boolean;
}

/**
 * Starts containerd `line` under `/run/<name>` and `/var/lib/<name>` (both wiped first); config
 * version 2 for 1.x, 3 for 2.x; CRI off unless `extras.criConfig` is given.
 */
export async function startContainerd(
  name = "nerdbox-shim-test",
  line: ContainerdLine = "1.6",
  opts: ContainerdOptions = {},
): Promise<Containerd> {
  if (opts.erofs) {
    if (!line.startsWith("2.")) throw new Error(`containerd ${line} has no erofs snapshotter`);
    await checkErofsHost();
  }
  const binDir = containerdBinDir(line);
  const containerdBin = `${binDir}/containerd`;
  const ctrBin = `${binDir}/ctr`;
  for (const bin of [containerdBin, ctrBin]) {
    if (!(await exists(bin))) {
      throw new Error(
        `${bin} is not installed (containerd ${line}: deno task setup installs it): the test needs it`,
      );
    }
  }
  const runDir = `/run/${name}`;
  const libDir = `/var/lib/${name}`;
  await cleanDir(runDir);
  await cleanDir(libDir);
  await Deno.mkdir(runDir, { recursive: true });
  await Deno.mkdir(libDir, { recursive: true });
  await Deno.mkdir("/run/containerd", { recursive: true });
  const address = `${runDir}/ctd.sock`;
  const root = `${libDir}/root`;
  const state = `${runDir}/state`;
  const config = `${libDir}/ctd.toml`;
  await Deno.writeTextFile(
    config,
    [
      `version = ${line.startsWith("2.") ? 3 : 2}`,
      `root = "${root}"`,
      `state = "${state}"`,
      opts.criConfig !== undefined
        ? ""
        : line.startsWith("2.")
        ? `disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.runtime", "io.containerd.cri.v1.images"]`
        : `disabled_plugins = ["io.containerd.grpc.v1.cri"]`,
      "[grpc]",
      `  address = "${address}"`,
      "[ttrpc]",
      `  address = "${address}.ttrpc"`,
      "[debug]",
      `  level = "debug"`,
      opts.criConfig ?? "",
      ...(opts.erofs ? erofsConfigLines() : []),
      "",
    ].join("\n"),
  );
  const logPath = `${runDir}/containerd.log`;
  const log = await Deno.open(logPath, { write: true, create: true, truncate: true });
  const path = [
    `${REPO}/bin`,
    binDir,
    ...(opts.erofs ? [EROFS_BIN_DIR] : []),
    Deno.env.get("PATH") ?? "/usr/sbin:/usr/bin:/sbin:/bin",
  ];
  const env = { PATH: path.join(":") };
  const child = new Deno.Command(containerdBin, {
    args: ["--config", config],
    env,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    detached: true,
  }).spawn();
  // copy containerd's output into its log file
  const pump = (s: ReadableStream<Uint8Array>) =>
    s.pipeTo(
      new WritableStream({ write: (c) => log.write(c).then(() => {}) }),
      { preventClose: true },
    ).catch(() => {});
  const pumps = Promise.all([pump(child.stdout), pump(child.stderr)]);
  let exited = false;
  const status = child.status.then((s) => {
    exited = true;
    return s;
  });

  const ctr = async (args: string[], opts: { timeoutMs?: number } = {}): Promise<CtrResult> => {
    const c = new Deno.Command(ctrBin, {
      args: ["-a", address, ...args],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      ...(opts.timeoutMs ? { signal: AbortSignal.timeout(opts.timeoutMs) } : {}),
    });
    const out = await c.output();
    return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
  };
  const spawnCtr = (args: string[]) =>
    new Deno.Command(ctrBin, {
      args: ["-a", address, ...args],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();

  /** Force-deletes every task and container this containerd still has (a failed test's rest). */
  const removeAll = async () => {
    const nss = await ctr(["namespaces", "ls", "-q"], { timeoutMs: 10_000 }).catch(() => null);
    for (const ns of (nss?.stdout ?? "").split("\n").filter(Boolean)) {
      const ts = await ctr(["-n", ns, "task", "ls", "-q"], { timeoutMs: 10_000 }).catch(() => null);
      for (const id of (ts?.stdout ?? "").split("\n").filter(Boolean)) {
        await ctr(["-n", ns, "task", "delete", "-f", id], { timeoutMs: 30_000 }).catch(() => {});
      }
      const cs = await ctr(["-n", ns, "containers", "ls", "-q"], { timeoutMs: 10_000 })
        .catch(() => null);
      for (const id of (cs?.stdout ?? "").split("\n").filter(Boolean)) {
        await ctr(["-n", ns, "containers", "rm", id], { timeoutMs: 10_000 }).catch(() => {});
      }
    }
  };

  /** Shim processes started by this containerd (their argv carries `-address ADDRESS`). */
  const shimPids = () => shimPidsOf(address);

  const stop = async () => {
    if (!exited) await removeAll();
    for (const pid of await shimPids()) {
      try {
        Deno.kill(pid, "SIGTERM"); // the nerdbox daemon stops its VMs and exits
      } catch { /* gone */ }
    }
    for (let i = 0; i < 50 && (await shimPids()).length > 0; i++) {
      await new Promise((r) => setTimeout(r, 100));
    }
    for (const pid of await shimPids()) {
      try {
        Deno.kill(pid, "SIGKILL");
      } catch { /* gone */ }
    }
    if (!exited) {
      try {
        child.kill("SIGTERM");
      } catch { /* gone */ }
      const cancelKill = killAfter(child, 5000);
      await status;
      cancelKill();
    }
    await pumps;
    log.close();
    await cleanDir(state);
    await cleanDir(root);
    await cleanDir(libDir);
    // keep the log for post-mortems until the next run; remove the rest
    for await (const e of Deno.readDir(runDir)) {
      if (e.name !== "containerd.log") {
        await Deno.remove(`${runDir}/${e.name}`, { recursive: true }).catch(() => {});
      }
    }
  };

  const deadline = Date.now() + 20_000;
  while (true) {
    if (exited) {
      await stop();
      throw new Error(`containerd exited at start; see ${logPath}`);
    }
    if (await exists(address) && (await ctr(["version"])).code === 0) break;
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`containerd did not answer on ${address} within 20s; see ${logPath}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    name,
    line,
    ctrBin,
    address,
    ttrpcAddress: `${address}.ttrpc`,
    root,
    state,
    logPath,
    pid: child.pid,
    ctr,
    spawnCtr,
    bundleDir: (id, ns = "default") => `${state}/io.containerd.runtime.v2.task/${ns}/${id}`,
    stop,
  };
}

/** Busybox applets linked into the test image. */
export const IMAGE_APPLETS = [
  "sh",
  "echo",
  "cat",
  "sleep",
  "tty",
  "ip",
  "ls",
  "true",
  "false",
  "env",
  "printf",
  "kill",
  "hostname",
  "wc",
  "head",
  "grep",
  "mount",
  "id",
  "pwd",
  "yes",
  "dd",
];

/** What the busybox image holds besides busybox (defaults: IMAGE_APPLETS, `Cmd: ["/bin/sh"]`). */
export interface BusyboxImageOptions {
  /** Applet links in /bin. */
  applets?: string[];
  /** The image config's Cmd. */
  cmd?: string[];
  /** More files: path in the image (absolute) → host file copied there, mode 0755. */
  files?: Record<string, string>;
}

/**
 * Builds a one-layer OCI image layout tar (`ref` as its name) around the host's static busybox,
 * at `out`. Deterministic: the same busybox gives the same bytes.
 */
export async function buildBusyboxImage(
  out: string,
  ref = IMAGE,
  opts: BusyboxImageOptions = {},
): Promise<void> {
  const busybox = ["/bin/busybox", "/usr/bin/busybox"].find((p) => {
    try {
      return Deno.statSync(p).isFile;
    } catch {
      return false;
    }
  });
  if (!busybox) throw new Error("no static busybox (apt-get install busybox-static)");
  const w = await Deno.makeTempDir({ prefix: "nerdbox-shim-img-" });
  try {
    const r = `${w}/r`;
    for (const d of ["bin", "etc", "tmp", "proc", "sys", "dev", "root"]) {
      await Deno.mkdir(`${r}/${d}`, { recursive: true });
    }
    await Deno.copyFile(busybox, `${r}/bin/busybox`);
    await Deno.chmod(`${r}/bin/busybox`, 0o755);
    for (const a of opts.applets ?? IMAGE_APPLETS) await Deno.symlink("busybox", `${r}/bin/${a}`);
    for (const [dest, src] of Object.entries(opts.files ?? {})) {
      await Deno.copyFile(src, `${r}${dest}`);
      await Deno.chmod(`${r}${dest}`, 0o755);
    }
    await Deno.writeTextFile(`${r}/etc/passwd`, "root:x:0:0:root:/root:/bin/sh\n");
    await Deno.writeTextFile(`${r}/etc/group`, "root:x:0:\n");
    const blobs = `${w}/o/blobs/sha256`;
    await Deno.mkdir(blobs, { recursive: true });
    const blob = async (path: string) => {
      const d = await sha256File(path);
      await Deno.copyFile(path, `${blobs}/${d}`);
      return { digest: `sha256:${d}`, size: (await Deno.stat(path)).size };
    };
    const tar = await run("tar", [
      "--numeric-owner",
      "--owner=0",
      "--group=0",
      "--sort=name",
      "--mtime=@0",
      "-C",
      r,
      "-cf",
      `${w}/l.tar`,
      ".",
    ]);
    if (tar.code !== 0) throw new Error(`tar failed: ${tar.stderr}`);
    const diffId = await sha256File(`${w}/l.tar`);
    const gz = await run("gzip", ["-n", "-9", "-k", `${w}/l.tar`]);
    if (gz.code !== 0) throw new Error(`gzip failed: ${gz.stderr}`);
    const layer = await blob(`${w}/l.tar.gz`);
    const M = "application/vnd.oci.image";
    await Deno.writeTextFile(
      `${w}/c.json`,
      JSON.stringify({
        architecture: "amd64",
        os: "linux",
        config: { Env: ["PATH=/bin"], Cmd: opts.cmd ?? ["/bin/sh"], WorkingDir: "/" },
        rootfs: { type: "layers", diff_ids: [`sha256:${diffId}`] },
      }),
    );
    const cfg = await blob(`${w}/c.json`);
    await Deno.writeTextFile(
      `${w}/m.json`,
      JSON.stringify({
        schemaVersion: 2,
        mediaType: `${M}.manifest.v1+json`,
        config: { mediaType: `${M}.config.v1+json`, ...cfg },
        layers: [{ mediaType: `${M}.layer.v1.tar+gzip`, ...layer }],
      }),
    );
    const man = await blob(`${w}/m.json`);
    await Deno.writeTextFile(
      `${w}/o/index.json`,
      JSON.stringify({
        schemaVersion: 2,
        manifests: [{
          mediaType: `${M}.manifest.v1+json`,
          ...man,
          platform: { architecture: "amd64", os: "linux" },
          annotations: {
            "io.containerd.image.name": ref,
            "org.opencontainers.image.ref.name": "latest",
          },
        }],
      }),
    );
    await Deno.writeTextFile(`${w}/o/oci-layout`, `{"imageLayoutVersion":"1.0.0"}`);
    const pack = await run("tar", [
      "-C",
      `${w}/o`,
      "-cf",
      out,
      "oci-layout",
      "index.json",
      "blobs",
    ]);
    if (pack.code !== 0) throw new Error(`tar failed: ${pack.stderr}`);
  } finally {
    await Deno.remove(w, { recursive: true });
  }
}

/**
 * Builds the busybox image (`opts` as buildBusyboxImage) and imports it into `ctd` (as IMAGE),
 * unpacked for `opts.snapshotter` when given.
 */
export async function importBusyboxImage(
  ctd: Containerd,
  ref = IMAGE,
  opts: BusyboxImageOptions & { snapshotter?: string } = {},
): Promise<void> {
  const tar = `/run/${ctd.name}/bbtest.tar`;
  const { snapshotter, ...image } = opts;
  await buildBusyboxImage(tar, ref, image);
  const sn = snapshotter ? ["--snapshotter", snapshotter] : [];
  const r = await ctd.ctr(["images", "import", ...sn, tar]);
  await Deno.remove(tar).catch(() => {});
  if (r.code !== 0) throw new Error(`ctr images import failed: ${r.stderr}`);
}
