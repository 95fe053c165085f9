/**
 * Container creation for the Task service (containerd's runc shim calls this NewContainer):
 * mounts the rootfs, parses the bundle through the one spec parser, plans the VM and opens the
 * init process's I/O. On failure everything it did is undone before the error is thrown. Exec'd
 * processes are made here too (newExecProcess).
 */
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import type * as pb from "./proto/gen/containerd/shim_pb.ts";
import { OptionsSchema as RuntimeOptionsSchema } from "./proto/gen/runtimeoptions/options_pb.ts";
import { Code, TtrpcError } from "./ttrpc.ts";
import { Container, type ContainerEvents, Proc, type VmLauncher } from "./container.ts";
import { unmountAll } from "./mounts.ts";
import { takeRootfs } from "./erofs_rootfs.ts";
import { openProcessIo, type ProcessIo, type StdioPaths } from "./stdio.ts";
import { parseBackend } from "../spec/backend.ts";
import { SpecValidationError } from "../spec/types.ts";
import type { BackendChoice } from "../spec/types.ts";
import type { Backend, VmHandle } from "../vm/types.ts";

/** Parses a runtime options file: JSON `{"backend": …}` or TOML-style `backend = "…"` lines. */
export function parseOptionsFile(text: string, path: string): { backend?: BackendChoice } {
  let backend: string | undefined;
  const trimmed = text.trim();
  if (trimmed.startsWith("{")) {
    const obj = JSON.parse(trimmed);
    if (obj.backend !== undefined) backend = String(obj.backend);
  } else {
    for (const line of text.split("\n")) {
      const m = line.replace(/#.*$/, "").match(/^\s*backend\s*=\s*"?([^"\s]*)"?\s*$/);
      if (m) backend = m[1];
    }
  }
  return backend === undefined ? {} : { backend: parseBackend(backend, `${path}: backend`) };
}

/** The backend a container gets when its annotations do not choose one. */
export async function defaultBackend(options: Uint8Array | undefined): Promise<BackendChoice> {
  let configPath = "";
  if (options && options.length > 0) {
    try {
      const any = fromBinary((await import("@bufbuild/protobuf/wkt")).AnySchema, options);
      if (any.typeUrl.endsWith("runtimeoptions.v1.Options")) {
        configPath = fromBinary(RuntimeOptionsSchema, any.value).configPath;
      }
    } catch { /* options of another runtime's type: not ours to read */ }
  }
  if (configPath) {
    let parsed;
    try {
      parsed = parseOptionsFile(await Deno.readTextFile(configPath), configPath);
    } catch (err) {
      if (err instanceof SpecValidationError) throw err;
      throw new TtrpcError(
        Code.INVALID_ARGUMENT,
        `runtime options file ${configPath}: ${err instanceof Error ? err.message : err}`,
      );
    }
    if (parsed.backend) return parsed.backend;
  }
  const env = Deno.env.get("NERDBOX_BACKEND");
  if (env) return parseBackend(env, "NERDBOX_BACKEND");
  return "auto";
}

/** What newContainer needs from the service. */
export interface NewContainerDeps {
  /** The VM's state directory (unique per container in this daemon). */
  stateDir: string;
  /** The runtime options saved with the reservation (used when the request carries none). */
  reserved: Uint8Array | undefined;
  /** Resolves `auto` (lib/vm/plan.ts resolveBackend). */
  resolveBackend: (choice: BackendChoice) => Promise<Backend>;
  /** Loads the VM launcher on first use. */
  launcher: () => Promise<VmLauncher>;
  /** Looks up a created container (the pod sandbox a member joins). */
  lookup: (id: string) => Container | undefined;
  events: ContainerEvents;
  /** Where parser warnings go. */
  warn: (msg: string) => void;
}

/** A created container and what the Create event reports. */
export interface NewContainer {
  container: Container;
  backend: Backend;
  terminal: boolean;
}

/** Mounts, parses, plans and opens I/O for `req`; undoes all of it when any step fails. */
export async function newContainer(
  req: pb.CreateTaskRequest,
  deps: NewContainerDeps,
): Promise<NewContainer> {
  const { id, bundle } = req;
  const rootfs = `${bundle}/rootfs`;
  let mounted = false;
  let io: ProcessIo | undefined;
  try {
    const mounts = req.rootfs.map((m) => ({ type: m.type, source: m.source, options: m.options }));
    // The parser and planner load with the first Create, so that a new daemon listens sooner.
    const [{ readOciBundle }, { buildSandboxSpec }, { KEY_BACKEND }, { planVm }] = await Promise
      .all([
        import("../spec/oci.ts"),
        import("../spec/sandbox.ts"),
        import("../spec/annotations.ts"),
        import("../vm/plan.ts"),
      ]);
    const oci = await readOciBundle(bundle);
    const terminal = req.terminal || oci.process.terminal;
    const backendGiven = oci.annotations[KEY_BACKEND] !== undefined;
    const fallback = backendGiven ? undefined : await defaultBackend(
      req.options && req.options.value.length > 0
        ? toBinary((await import("@bufbuild/protobuf/wkt")).AnySchema, req.options)
        : deps.reserved,
    );
    const { spec, warnings } = buildSandboxSpec({
      id,
      rootfs: oci.rootfs,
      process: { ...oci.process, terminal },
      hostname: oci.hostname,
      annotations: oci.annotations,
      ...(fallback ? { backend: fallback } : {}),
      ...(oci.netnsPath ? { netns: oci.netnsPath } : {}),
    });
    for (const w of warnings) deps.warn(w);
    const backend = await deps.resolveBackend(spec.backend);
    const plan = planVm(spec, { backend, stateDir: deps.stateDir });
    // The VM is the pod (lib/shim/pod_member.ts): the sandbox's VM applies specs with crun,
    // the pod's later containers are created inside it.
    const pod = await import("./pod_member.ts");
    const portForward = await import("./port_forward.ts");
    if (pod.isPodSandbox(oci.annotations)) plan.oci = oci.raw as Record<string, unknown>;
    // Host bind mounts reach the VM through its volume share (lib/shim/volumes.ts).
    await (await import("./volumes.ts")).planVolumes(
      plan,
      oci.raw as Record<string, unknown>,
      id,
      pod.isPodSandbox(oci.annotations),
      deps.warn,
    );
    const sandboxId = pod.podSandboxOf(oci.annotations);
    for (const w of pod.podNetworkWarnings(spec, sandboxId)) deps.warn(w);
    // erofs layers become the plan's read-only disks; any other mount list is mounted here.
    mounted = await takeRootfs(plan, mounts, rootfs, !!sandboxId);
    const stdio: StdioPaths = {
      stdin: req.stdin,
      stdout: req.stdout,
      stderr: req.stderr,
      terminal,
    };
    io = await openProcessIo(stdio);
    const container = new Container({
      id,
      bundle,
      plan,
      stdio,
      io,
      rootfsMounted: mounted,
      launch: (p, s) => {
        const sandbox = sandboxId ? deps.lookup(sandboxId) : undefined;
        if (sandbox?.vm && sandbox.plan.oci && sandbox.init.state === "running") {
          return pod.startInPod(sandbox.vm, id, oci.raw as Record<string, unknown>, rootfs, s);
        }
        return deps.launcher().then((l) => l(p, s));
      },
      events: deps.events,
      // CRI port-forward dials localhost in the pod's netns: under QEMU nothing of the VM
      // listens there, so the sandbox mirrors the VM's ports onto it (lib/shim/port_forward.ts).
      ...(pod.isPodSandbox(oci.annotations) && backend === "qemu"
        ? {
          onRunning: (vm: VmHandle) =>
            portForward.startPortMirror(vm, plan.netns, (msg) => deps.warn(msg)),
        }
        : {}),
    });
    return { container, backend, terminal };
  } catch (err) {
    await io?.close().catch(() => {});
    if (mounted) await unmountAll(rootfs).catch(() => {});
    throw err;
  }
}

/** Parses an Exec request's OCI Process JSON and opens its I/O; Start runs it. */
export async function newExecProcess(req: pb.ExecProcessRequest, bundle: string): Promise<Proc> {
  let process;
  try {
    const { parseOciConfig } = await import("../spec/oci.ts");
    const json = JSON.parse(new TextDecoder().decode(req.spec?.value ?? new Uint8Array()));
    process = parseOciConfig({ root: { path: "rootfs" }, process: json }, bundle).process;
  } catch (err) {
    const msg = err instanceof Error ? err.message : String(err);
    throw new TtrpcError(Code.INVALID_ARGUMENT, `exec ${JSON.stringify(req.execId)}: ${msg}`);
  }
  const stdio: StdioPaths = {
    stdin: req.stdin,
    stdout: req.stdout,
    stderr: req.stderr,
    terminal: req.terminal,
  };
  const p = new Proc(req.execId, stdio);
  p.process = { ...process, terminal: req.terminal };
  p.io = await openProcessIo(stdio);
  return p;
}
