/**
 * A private Kubernetes node for tests and benches: containerd with CRI (1.6 by default, or the
 * 1.7/2.1 private installs) with its own root, state and sockets, both runtimes (`runc`, and
 * `nerdbox` from this checkout's bin/), a CNI bridge network in a free private subnet with its own
 * bridge name, conf dir and ipam dir, and offline images imported with ctr (a pause-like sandbox
 * image and a busybox with httpd, wget and nc). crictl is the CRI kit's. `stop()` removes the
 * pods, stops containerd, and deletes the bridge, the iptables rules the plugins added, leftover
 * netns, mounts and dirs, and restores `net.ipv4.ip_forward`.
 *
 *   const node = await startCriNode();
 *   const pod = await node.runPod(podConfig({ name: "web" }), "nerdbox");
 *   const c = await node.createContainer(pod, containerConfig({ name: "c", command: ["sleep", "9"] }));
 *   await node.startContainer(c);
 *   await node.stop();
 */
import {
  type BusyboxImageOptions,
  type ContainerdLine,
  importBusyboxImage,
  startContainerd,
} from "./containerd.ts";
import { findCriKit } from "./cri_kit.ts";
import { mountsUnder } from "./containerd.ts";
import { uniqueNetnsName } from "./netns.ts";

/** The sandbox image: the CRI kit's static pause (fixtures/pause) as /pause. */
export const PAUSE_IMAGE = "localhost/nerdbox-pause:1";
/** The workload image: busybox with a shell, httpd, wget, nc and the usual tools. */
export const CRI_BUSYBOX_IMAGE = "localhost/nerdbox-busybox:1";
/** Applets linked into CRI_BUSYBOX_IMAGE. */
export const CRI_BUSYBOX_APPLETS = [
  ..."sh echo cat sleep ls true false env printf kill hostname wc head grep mount id tty".split(
    " ",
  ),
  ..."httpd wget nc netstat tee mkdir rm ip sed".split(" "),
];
/** The CNI plugins the node's network uses (from /usr/lib/cni). */
const CNI_BIN = "/usr/lib/cni";

/** The two runtime handlers every node has. */
export type CriRuntime = "runc" | "nerdbox";

/** What to start. */
export interface CriNodeOptions {
  /** containerd release line (default 1.6, /usr/bin/containerd). */
  containerd?: ContainerdLine;
  /** Runtime handler for pods that name none (default nerdbox). */
  defaultRuntime?: CriRuntime;
}

/** Result of one crictl call. */
export interface CrictlResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** crictl's PodSandboxConfig (the JSON `crictl runp` reads). */
export interface PodSandboxConfig {
  metadata: { name: string; namespace: string; uid: string; attempt: number };
  hostname?: string;
  log_directory?: string;
  dns_config?: { servers: string[]; searches: string[]; options: string[] };
  port_mappings?: { protocol?: number; container_port: number; host_port?: number }[];
  annotations?: Record<string, string>;
  labels?: Record<string, string>;
  linux?: Record<string, unknown>;
}

/** crictl's ContainerConfig (the JSON `crictl create` reads). */
export interface ContainerConfig {
  metadata: { name: string; attempt?: number };
  image: { image: string };
  command?: string[];
  args?: string[];
  working_dir?: string;
  envs?: { key: string; value: string }[];
  mounts?: { container_path: string; host_path: string; readonly?: boolean }[];
  log_path?: string;
  stdin?: boolean;
  stdin_once?: boolean;
  tty?: boolean;
  annotations?: Record<string, string>;
  linux?: Record<string, unknown>;
}

/** A pod config with a unique uid; `extra` fields override. */
export function podConfig(
  name: string,
  extra: Partial<PodSandboxConfig> = {},
): PodSandboxConfig {
  return {
    metadata: { name, namespace: "default", uid: crypto.randomUUID(), attempt: 0 },
    linux: {},
    ...extra,
  };
}

/**
 * A container config running `command` in CRI_BUSYBOX_IMAGE (logs to `<name>.log`, its own PID
 * namespace as kubelet gives one).
 */
export function containerConfig(
  name: string,
  command: string[],
  extra: Partial<ContainerConfig> = {},
): ContainerConfig {
  return {
    metadata: { name },
    image: { image: CRI_BUSYBOX_IMAGE },
    command,
    log_path: `${name}.log`,
    // as kubelet does: the container's own PID namespace (crictl's JSON default would be the pod's)
    linux: { security_context: { namespace_options: { pid: 1 } } },
    ...extra,
  };
}

/** A running private CRI node. */
export interface CriNode {
  /** containerd's release line. */
  line: ContainerdLine;
  /** The node's own directory (configs, pod log dirs; a place for hostPath sources). */
  dir: string;
  /** containerd's gRPC socket (CRI endpoint). */
  address: string;
  /** containerd's log. */
  logPath: string;
  /** The CNI bridge and its subnet (`10.N.0.0/16`). */
  bridge: string;
  subnet: string;
  /** `crictl --config <node> ARGS…` (stdin closed unless `input` is given). */
  crictl(args: string[], opts?: { timeoutMs?: number; input?: string }): Promise<CrictlResult>;
  /** Like crictl, but throws (with stderr) unless it exits 0; returns stdout trimmed. */
  crictlOk(args: string[], opts?: { timeoutMs?: number; input?: string }): Promise<string>;
  /** Spawns crictl with piped stdin/stdout/stderr (attach, port-forward). */
  spawnCrictl(args: string[]): Deno.ChildProcess;
  /** Writes `value` as JSON into the node's dir under `file`; returns the path. */
  writeJson(file: string, value: unknown): Promise<string>;
  /** RunPodSandbox with `runtime` (default: the node's default); returns the pod id. */
  runPod(config: PodSandboxConfig, runtime?: CriRuntime): Promise<string>;
  /** CreateContainer in pod `podId` (whose config is `pod`); returns the container id. */
  createContainer(podId: string, config: ContainerConfig, pod: PodSandboxConfig): Promise<string>;
  /** StartContainer. */
  startContainer(id: string): Promise<void>;
  /** StopPodSandbox then RemovePodSandbox. */
  removePod(podId: string): Promise<void>;
  /** Removes every pod, stops containerd and leaves the host as found. */
  stop(): Promise<void>;
}

const dec = new TextDecoder();

async function run(cmd: string, args: string[]): Promise<CrictlResult> {
  const o = await new Deno.Command(cmd, { args, stdin: "null", stdout: "piped", stderr: "piped" })
    .output();
  return { code: o.code, stdout: dec.decode(o.stdout), stderr: dec.decode(o.stderr) };
}

/** The first 10.N.0.0/16 (N in 130..160) that no host address or route uses. */
async function freeSubnet(): Promise<string> {
  const used = (await run("ip", ["-4", "-o", "addr", "show"])).stdout +
    (await run("ip", ["-4", "route", "show", "table", "all"])).stdout;
  for (let n = 130; n <= 160; n++) {
    if (!new RegExp(`(^|\\s)10\\.${n}\\.`).test(used)) return `10.${n}.0.0/16`;
  }
  throw new Error("cri_node: no free 10.N.0.0/16 subnet (N = 130..160)");
}

function criToml(line: ContainerdLine, o: { dir: string; runtime: CriRuntime }): string {
  const nerdbox = [
    `runtime_type = "io.containerd.nerdbox.v1"`,
    `pod_annotations = ["io.containerd.nerdbox.*"]`,
    `container_annotations = ["io.containerd.nerdbox.*"]`,
  ].join("\n      ");
  const opt = `[plugins."io.containerd.internal.v1.opt"]\n  path = "${o.dir}/opt"`;
  const cni = `bin_dir = "${CNI_BIN}"\n    conf_dir = "${o.dir}/net.d"`;
  if (line.startsWith("2.")) {
    const rt = `[plugins."io.containerd.cri.v1.runtime"`;
    return `${opt}
[plugins."io.containerd.nri.v1.nri"]
  disable = true
[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "${PAUSE_IMAGE}"
${rt}]
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  ${rt}.containerd]
    default_runtime_name = "${o.runtime}"
    ${rt}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
    ${rt}.containerd.runtimes.nerdbox]
      ${nerdbox}
  ${rt}.cni]
    ${cni}
[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"`;
  }
  const g = `[plugins."io.containerd.grpc.v1.cri"`;
  return `${opt}
${g}]
  sandbox_image = "${PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  ${line === "1.7" ? "netns_mounts_under_state_dir = true" : ""}
  ${g}.containerd]
    default_runtime_name = "${o.runtime}"
    snapshotter = "overlayfs"
    ${g}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
    ${g}.containerd.runtimes.nerdbox]
      ${nerdbox}
  ${g}.cni]
    ${cni}`;
}

/** Network namespaces in /run/netns. */
async function netnsNames(): Promise<string[]> {
  try {
    return (await Array.fromAsync(Deno.readDir("/run/netns"))).map((e) => e.name);
  } catch {
    return [];
  }
}

/** Starts the node (see the module doc); on failure everything started is undone. */
export async function startCriNode(opts: CriNodeOptions = {}): Promise<CriNode> {
  const line = opts.containerd ?? "1.6";
  const kit = await findCriKit();
  const crictlBin = `${kit}/bin/crictl`;
  for (const p of ["bridge", "portmap", "host-local", "loopback"]) {
    if (!(await Deno.stat(`${CNI_BIN}/${p}`).catch(() => null))) {
      throw new Error(
        `cri_node: ${CNI_BIN}/${p} is missing (apt-get install containernetworking-plugins)`,
      );
    }
  }
  const id = uniqueNetnsName("").slice(0, 8);
  const name = `nbcri-${id}`;
  const bridge = `nbc${id}`;
  const netName = `nerdbox-cri-${id}`;
  const dir = `/var/lib/${name}.node`; // beside containerd's /var/lib/<name>, which it wipes
  const netnsBefore = new Set(await netnsNames());
  const dirsBefore = new Set<string>();
  for (const d of ["/var/lib/cni/results", "/var/lib/cni/networks", "/var/lib/cni", "/run/netns"]) {
    if (await Deno.stat(d).catch(() => null)) dirsBefore.add(d);
  }
  const iptBefore = `/run/${name}.iptables`;
  const ip6Before = `/run/${name}.ip6tables`;
  await Deno.writeTextFile(iptBefore, (await run("iptables-save", [])).stdout);
  await Deno.writeTextFile(ip6Before, (await run("ip6tables-save", [])).stdout);
  const ipForward = await Deno.readTextFile("/proc/sys/net/ipv4/ip_forward");
  const subnet = await freeSubnet();
  const prefix = subnet.split(".").slice(0, 2).join(".") + ".";
  let ctd: Awaited<ReturnType<typeof startContainerd>> | undefined;

  const crictlArgs = (args: string[]) => ["--config", `${dir}/crictl.yaml`, ...args];
  const crictl = async (args: string[], o: { timeoutMs?: number; input?: string } = {}) => {
    const child = new Deno.Command(crictlBin, {
      args: crictlArgs(args),
      stdin: o.input !== undefined ? "piped" : "null",
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(o.timeoutMs ?? 600_000),
    }).spawn();
    if (o.input !== undefined) {
      const w = child.stdin.getWriter();
      await w.write(new TextEncoder().encode(o.input));
      await w.close();
    }
    const out = await child.output();
    return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
  };
  const crictlOk = async (args: string[], o: { timeoutMs?: number; input?: string } = {}) => {
    const r = await crictl(args, o);
    if (r.code !== 0) throw new Error(`crictl ${args.join(" ")}: exit ${r.code}: ${r.stderr}`);
    return r.stdout.trim();
  };

  const stop = async () => {
    if (ctd) {
      await crictl(["rmp", "-fa"], { timeoutMs: 180_000 }).catch(() => {});
      await crictl(["rm", "-fa"], { timeoutMs: 60_000 }).catch(() => {});
      await ctd.stop();
    }
    for (const ns of await netnsNames()) {
      if (netnsBefore.has(ns) || !ns.startsWith("cni-")) continue;
      const a = await run("ip", ["-n", ns, "-4", "-o", "addr"]);
      if (a.stdout.includes(` inet ${prefix}`)) await run("ip", ["netns", "delete", ns]);
    }
    const ports = (await run("ip", ["-o", "link", "show", "master", bridge])).stdout;
    for (const l of ports.split("\n").filter(Boolean)) {
      await run("ip", ["link", "del", l.split(": ")[1].split("@")[0]]);
    }
    await run("ip", ["link", "del", bridge]);
    for (const [cmd, before] of [["iptables", iptBefore], ["ip6tables", ip6Before]]) {
      await run("python3", [
        `${kit}/lib/ipt_cleanup.py`,
        "--cmd",
        cmd,
        "--before",
        before,
        "--marker",
        `"${netName}"`,
        "--marker",
        bridge,
        ...(cmd === "iptables" ? ["--marker", subnet] : []),
      ]);
      await Deno.remove(before).catch(() => {});
    }
    if ((await Deno.readTextFile("/proc/sys/net/ipv4/ip_forward")) !== ipForward) {
      await Deno.writeTextFile("/proc/sys/net/ipv4/ip_forward", ipForward);
    }
    const results = "/var/lib/cni/results";
    for (const e of await Array.fromAsync(Deno.readDir(results)).catch(() => [])) {
      if (e.name.startsWith(`${netName}-`)) await Deno.remove(`${results}/${e.name}`);
    }
    for (const d of [results, "/var/lib/cni/networks", "/var/lib/cni", "/run/netns"]) {
      if (!dirsBefore.has(d)) await Deno.remove(d).catch(() => {}); // only when empty
    }
    for (const d of [`/var/lib/${name}`, dir]) {
      for (const m of await mountsUnder(d)) await run("umount", ["-l", m]);
      await Deno.remove(d, { recursive: true }).catch(() => {});
    }
    await Deno.remove(`/run/${name}`, { recursive: true }).catch(() => {});
  };

  try {
    for (const d of ["net.d", "ipam", "opt", "logs"]) {
      await Deno.mkdir(`${dir}/${d}`, { recursive: true });
    }
    await Deno.writeTextFile(
      `${dir}/net.d/10-${netName}.conflist`,
      JSON.stringify({
        cniVersion: "0.4.0",
        name: netName,
        plugins: [
          {
            type: "bridge",
            bridge,
            isGateway: true,
            ipMasq: false,
            hairpinMode: true,
            ipam: {
              type: "host-local",
              ranges: [[{ subnet }]],
              routes: [{ dst: "0.0.0.0/0" }],
              dataDir: `${dir}/ipam`,
            },
          },
          { type: "portmap", capabilities: { portMappings: true } },
        ],
      }),
    );
    ctd = await startContainerd(name, line, {
      criConfig: criToml(line, { dir, runtime: opts.defaultRuntime ?? "nerdbox" }),
    });
    await Deno.writeTextFile(
      `${dir}/crictl.yaml`,
      `runtime-endpoint: unix://${ctd.address}\nimage-endpoint: unix://${ctd.address}\ntimeout: 600\n`,
    );
    const c = ctd;
    const importImage = async (ref: string, o: BusyboxImageOptions) => {
      await importBusyboxImage({ ...c, ctr: (a, x) => c.ctr(["-n", "k8s.io", ...a], x) }, ref, o);
    };
    // the kit's static pause (waits for a signal, reaps orphans), as a real node's sandbox image
    await importImage(PAUSE_IMAGE, {
      applets: [],
      files: { "/pause": `${kit}/fixtures/pause` },
      cmd: ["/pause"],
    });
    await importImage(CRI_BUSYBOX_IMAGE, { applets: CRI_BUSYBOX_APPLETS });
    const deadline = Date.now() + 30_000;
    while ((await crictl(["info"])).code !== 0) {
      if (Date.now() > deadline) throw new Error(`cri_node: CRI not ready; see ${ctd.logPath}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  } catch (err) {
    await stop();
    throw err;
  }

  const writeJson = async (file: string, value: unknown) => {
    const path = `${dir}/${file}`;
    await Deno.writeTextFile(path, JSON.stringify(value, null, 2));
    return path;
  };
  const runtimeDefault = opts.defaultRuntime ?? "nerdbox";
  return {
    line,
    dir,
    address: ctd.address,
    logPath: ctd.logPath,
    bridge,
    subnet,
    crictl,
    crictlOk,
    spawnCrictl: (args) =>
      new Deno.Command(crictlBin, {
        args: crictlArgs(args),
        stdin: "piped",
        stdout: "piped",
        stderr: "piped",
      }).spawn(),
    writeJson,
    async runPod(config, runtime = runtimeDefault) {
      await Deno.mkdir(`${dir}/logs/${config.metadata.uid}`, { recursive: true });
      const file = await writeJson(`pod-${config.metadata.uid}.json`, {
        log_directory: `${dir}/logs/${config.metadata.uid}`,
        ...config,
      });
      return await crictlOk(["runp", "--runtime", runtime, file]);
    },
    async createContainer(podId, config, pod) {
      const podFile = await writeJson(`pod-${pod.metadata.uid}.json`, {
        log_directory: `${dir}/logs/${pod.metadata.uid}`,
        ...pod,
      });
      const file = await writeJson(`ctr-${pod.metadata.uid}-${config.metadata.name}.json`, config);
      return await crictlOk(["create", podId, file, podFile]);
    },
    async startContainer(id) {
      await crictlOk(["start", id]);
    },
    async removePod(podId) {
      await crictlOk(["stopp", podId]);
      await crictlOk(["rmp", podId]);
    },
    stop,
  };
}
