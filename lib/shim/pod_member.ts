/**
 * The VM is the pod: a CRI sandbox container boots the pod's VM with its OCI spec applied by crun,
 * and each later container of that pod (same `io.kubernetes.cri.sandbox-id`) is created inside
 * that VM instead of booting its own. Until host directories are shared into a running VM, the
 * container's rootfs is streamed in (tar over the guest channel into the guest's tmpfs).
 */
import type { VmHandle, VmStdio } from "../vm/types.ts";
import type { ProcessSpec, SandboxSpec } from "../spec/types.ts";
import { SANDBOX_ANNOTATION } from "./address.ts";
import { bindMemberVolumes } from "./volumes.ts";
import type { ResourcesUpdate } from "../linux_resources.ts";

/** CRI's annotation saying whether a container is a pod's sandbox or one of its containers. */
export const CONTAINER_TYPE_ANNOTATION = "io.kubernetes.cri.container-type";
/** Where the guest keeps the containers added to the VM (guest/pod_containers.ts layout). */
export const GUEST_CONTAINERS_DIR = "/run/nerdbox/containers";

/** True for a CRI pod's sandbox (pause) container: it boots the pod's VM. */
export function isPodSandbox(annotations: Record<string, string>): boolean {
  return annotations[CONTAINER_TYPE_ANNOTATION] === "sandbox";
}

/** The sandbox id a CRI pod's (non-sandbox) container belongs to, or undefined. */
export function podSandboxOf(annotations: Record<string, string>): string | undefined {
  if (annotations[CONTAINER_TYPE_ANNOTATION] !== "container") return undefined;
  return annotations[SANDBOX_ANNOTATION] || undefined;
}

/**
 * Warnings for a pod's container carrying network annotations (CRI passes pod annotations on to
 * every container): created in the sandbox's VM, it shares that VM's NICs, container interfaces
 * and resolv.conf, so its own network.N / ctr.network.N / ctr.dns are not applied.
 */
export function podNetworkWarnings(
  spec: Pick<SandboxSpec, "networks" | "ctrNetworks" | "dns">,
  sandboxId: string | undefined,
): string[] {
  if (sandboxId === undefined) return [];
  const given = [
    ...(spec.networks.length > 0 ? ["network.N"] : []),
    ...(spec.ctrNetworks.length > 0 ? ["ctr.network.N"] : []),
    ...(spec.dns ? ["ctr.dns"] : []),
  ];
  if (given.length === 0) return [];
  return [
    `io.containerd.nerdbox.${given.join(", ")}: not applied to a container created in pod ` +
    `${sandboxId}'s VM: it shares the network and resolv.conf of the sandbox's VM`,
  ];
}

const ROOT_PROCESS: Omit<ProcessSpec, "args"> = {
  env: ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"],
  cwd: "/",
  uid: 0,
  gid: 0,
  terminal: false,
};

/** Runs `args` in the guest's own root; resolves with its status and stderr. */
async function guestRun(
  vm: VmHandle,
  args: string[],
  stdin?: ReadableStream<Uint8Array>,
): Promise<{ code: number; stderr: string }> {
  let stderr = "";
  const dec = new TextDecoder();
  const proc = await vm.exec!({ ...ROOT_PROCESS, args }, {
    ...(stdin ? { stdin } : {}),
    stdout: new WritableStream(),
    stderr: new WritableStream({ write: (c) => void (stderr += dec.decode(c, { stream: true })) }),
    terminal: false,
  }, { guest: true });
  const exit = await proc.exited;
  return { code: exit.code, stderr: stderr.trim() };
}

/**
 * Copies the host directory `rootfs` into the pod VM at `<GUEST_CONTAINERS_DIR>/<id>/lower`
 * (host `tar -c` → guest `busybox tar -x`, no shell on either side); returns that guest path.
 */
export async function streamRootfsIn(vm: VmHandle, id: string, rootfs: string): Promise<string> {
  const dest = `${GUEST_CONTAINERS_DIR}/${id}/lower`;
  const mk = await guestRun(vm, ["/bin/busybox", "mkdir", "-p", dest]);
  if (mk.code !== 0) throw new Error(`mkdir ${dest} in the pod VM: ${mk.stderr || mk.code}`);
  const tar = new Deno.Command("tar", {
    args: ["-C", rootfs, "--numeric-owner", "-cf", "-", "."],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const tarErr = new Response(tar.stderr).text();
  const [unpack, status] = await Promise.all([
    guestRun(vm, ["/bin/busybox", "tar", "-x", "-f", "-", "-C", dest], tar.stdout),
    tar.status,
  ]);
  if (!status.success) throw new Error(`tar -c ${rootfs}: ${(await tarErr).trim()}`);
  if (unpack.code !== 0) {
    throw new Error(`unpacking the rootfs in the pod VM: ${unpack.stderr || unpack.code}`);
  }
  return dest;
}

/**
 * Creates container `id` (OCI `spec`, host rootfs dir `rootfs`) inside the running pod VM `pod`
 * and returns it as a VmHandle: its pid is the pod VMM's, signals and execs go to the container,
 * and dispose kills it if it still runs. The VM itself stays the sandbox's.
 */
export async function startInPod(
  pod: VmHandle,
  id: string,
  spec: Record<string, unknown>,
  rootfs: string,
  stdio: VmStdio,
): Promise<VmHandle> {
  if (!pod.exec) throw new Error("the pod VM's backend cannot start processes in it");
  const lower = await streamRootfsIn(pod, id, rootfs);
  const p = (spec.process ?? {}) as { args?: string[]; terminal?: boolean };
  // Its host bind mounts go into the pod VM's volume share before the container is created.
  const volumes = await bindMemberVolumes(
    pod,
    id,
    spec,
    (msg) => (stdio.onWarning ?? ((m: string) => console.error(`nerdbox: ${m}`)))(msg),
  );
  let proc;
  try {
    proc = await pod.exec(
      { ...ROOT_PROCESS, args: p.args?.length ? p.args : ["/"], terminal: stdio.terminal === true },
      stdio,
      { container: { id, spec: volumes.spec, rootfs: { kind: "path", path: lower } } },
    );
  } catch (err) {
    await volumes.release().catch(() => {});
    throw err;
  }
  let ended = false;
  const exited = proc.exited.finally(() => (ended = true));
  return {
    pid: pod.pid,
    exited,
    signal: (signo) => proc.signal(signo),
    ...(proc.resize ? { resize: (cols: number, rows: number) => proc.resize!(cols, rows) } : {}),
    exec: (process, io) => pod.exec!(process, io, { in: id }),
    crun: true,
    ...(pod.stats ? { stats: () => pod.stats!(id) } : {}),
    ...(pod.update ? { update: (r: ResourcesUpdate) => pod.update!(r, id) } : {}),
    ...(pod.pids ? { pids: () => pod.pids!(id) } : {}),
    async dispose() {
      if (!ended) {
        await proc.signal(9).catch(() => {});
        await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
      }
      await volumes.release();
    },
  };
}
