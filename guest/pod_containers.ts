/**
 * The containers of a pod VM after its first one: each EXEC that carries a `container` request
 * becomes a new crun container (its own overlay rootfs and mount namespace, the VM's network
 * shared, the sandbox's IPC namespace joined); an EXEC with `in` runs inside a running one. Init keeps their specs and roots here and
 * removes a container's overlay when its process ends.
 */
import * as c from "./libc.ts";
import type { ExecTarget, GuestContainerRequest, GuestProcess } from "../lib/guest_protocol.ts";
import { ConfigError } from "./config.ts";
import {
  CRUN_STATE_DIR,
  crunCommand,
  type CrunExec,
  crunFailure,
  crunGlobalArgs,
  prepareCrunExec,
  prepareCrunRun,
} from "./oci_runtime.ts";
import { envRecord, ExecError, type Running } from "./workload.ts";

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === "object" && v !== null && !Array.isArray(v);
const ID_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

/** Reads the optional `container` / `in` / `guest` / `dial` fields of an EXEC payload; errors name the field. */
export function parseExecTarget(v: Obj, path: string): ExecTarget {
  if (v.dial !== undefined) {
    const port = v.dial;
    if (typeof port !== "number" || !Number.isInteger(port) || port < 1 || port > 65535) {
      throw new ConfigError(`${path}dial`, port, "a TCP port 1-65535");
    }
    if (v.container !== undefined || v.in !== undefined || v.guest !== undefined) {
      throw new ConfigError(`${path}dial`, port, "absent when container, in or guest is given");
    }
    return { dial: port };
  }
  if (v.guest !== undefined) {
    if (v.guest !== true) throw new ConfigError(`${path}guest`, v.guest, "true or absent");
    if (v.container !== undefined || v.in !== undefined) {
      throw new ConfigError(`${path}guest`, v.guest, "absent when container or in is given");
    }
    return { guest: true };
  }
  if (v.container !== undefined && v.in !== undefined) {
    throw new ConfigError(`${path}in`, v.in, "absent when container is given");
  }
  if (v.in !== undefined) {
    if (typeof v.in !== "string" || !ID_RE.test(v.in)) {
      throw new ConfigError(`${path}in`, v.in, "a container id");
    }
    return { in: v.in };
  }
  if (v.container === undefined) return {};
  const r = v.container;
  if (!isObj(r)) throw new ConfigError(`${path}container`, r, "an object");
  if (typeof r.id !== "string" || !ID_RE.test(r.id)) {
    throw new ConfigError(`${path}container.id`, r.id, "[A-Za-z0-9][A-Za-z0-9_.-]{0,127}");
  }
  if (!isObj(r.spec) || !isObj(r.spec.process)) {
    throw new ConfigError(`${path}container.spec`, r.spec, "an OCI spec with a process");
  }
  const fs = r.rootfs;
  if (!isObj(fs) || fs.kind !== "path" || typeof fs.path !== "string") {
    throw new ConfigError(`${path}container.rootfs`, fs, '{kind: "path", path}');
  }
  if (!fs.path.startsWith("/") || fs.path.split("/").includes("..")) {
    throw new ConfigError(`${path}container.rootfs.path`, fs.path, "an absolute path without ..");
  }
  return { container: { id: r.id, spec: r.spec, rootfs: { kind: "path", path: fs.path } } };
}

/** The running containers of the VM and where their files are. */
export class PodContainers {
  readonly #containers = new Map<string, { spec: Obj; root: string; own: boolean }>();
  #first: string | undefined;

  /** `workDir`: init's tmpfs (containers go under `<workDir>/containers/<id>`). */
  constructor(readonly workDir: string, readonly log: (line: string) => void) {}

  /** Records the VM's first container (its rootfs is init's). */
  adopt(id: string, spec: Obj, root: string): void {
    this.#first = id;
    this.#containers.set(id, { spec, root, own: false });
  }

  /**
   * `/proc/<pid>/ns` of the VM's first container (the pod's sandbox), whose IPC (and, when asked,
   * PID) namespace the later ones join; undefined (they get new ones, logged) when crun does not
   * report it running.
   */
  sandboxNs(): string | undefined {
    const id = this.#first;
    if (id === undefined) return undefined;
    let why: string;
    try {
      const crun = crunCommand();
      const out = new Deno.Command(crun.program, {
        args: [...crunGlobalArgs(), "state", id],
        env: envRecord(crun.env),
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).outputSync();
      if (out.success) {
        const state = JSON.parse(new TextDecoder().decode(out.stdout));
        const pid = isObj(state) ? state.pid : undefined;
        if (typeof pid === "number" && Number.isInteger(pid) && pid > 0) return `/proc/${pid}/ns`;
        why = `no pid in its state: ${JSON.stringify(state)}`;
      } else why = new TextDecoder().decode(out.stderr).trim();
    } catch (err) {
      why = String(err);
    }
    this.log(`container: the sandbox's namespaces are not known (${why}): new ones are used`);
    return undefined;
  }

  /** Mounts the new container's overlay rootfs, writes its bundle; returns its `crun run`. */
  create(req: GuestContainerRequest, terminal: boolean): GuestProcess {
    if (this.#containers.has(req.id)) {
      throw new ExecError(127, `container ${req.id}: already exists in this VM`);
    }
    try {
      if (!Deno.statSync(req.rootfs.path).isDirectory) throw new Error("not a directory");
    } catch (err) {
      throw new ExecError(127, `container ${req.id}: rootfs ${req.rootfs.path}: ${err}`);
    }
    const dir = `${this.workDir}/containers/${req.id}`;
    const root = `${dir}/rootfs`;
    for (const d of ["upper", "work", "rootfs"]) Deno.mkdirSync(`${dir}/${d}`, { recursive: true });
    try {
      c.mount(
        "overlay",
        root,
        "overlay",
        0,
        `lowerdir=${req.rootfs.path},upperdir=${dir}/upper,workdir=${dir}/work`,
      );
    } catch (err) {
      Deno.removeSync(dir, { recursive: true });
      throw new ExecError(127, `container ${req.id}: cannot mount its rootfs: ${err}`);
    }
    this.#containers.set(req.id, { spec: req.spec, root, own: true });
    try {
      this.#copyEtcFiles(root);
      return prepareCrunRun(req.spec, root, req.id, terminal, this.log, this.sandboxNs());
    } catch (err) {
      this.release(req.id);
      throw err;
    }
  }

  /** The pod's resolv.conf, hosts and hostname (init wrote them into the first root) into `root`. */
  #copyEtcFiles(root: string): void {
    const first = [...this.#containers.values()].find((x) => !x.own);
    if (!first) return;
    try {
      Deno.mkdirSync(`${root}/etc`, { recursive: true });
      for (const f of ["resolv.conf", "hosts", "hostname"]) {
        try {
          Deno.writeFileSync(`${root}/etc/${f}`, Deno.readFileSync(`${first.root}/etc/${f}`));
        } catch { /* not there: the image's own stays */ }
      }
    } catch (err) {
      this.log(`container: /etc files: ${err}`);
    }
  }

  /** crun's errors from running container `id` (oci_runtime.ts crunFailure), before release. */
  crunFailure(id: string): string | undefined {
    const ctr = this.#containers.get(id);
    return ctr ? crunFailure(ctr.root, id) : undefined;
  }

  /** Whether container `id` is one of this VM's (created, not yet released). */
  has(id: string): boolean {
    return this.#containers.has(id);
  }

  /**
   * Resolves once crun has created container `id` (its state file exists), so that an exec right
   * after the container's start finds it; gives up after `ms` (the exec then reports crun's error).
   */
  async waitCreated(id: string, ms = 10_000): Promise<void> {
    const deadline = Date.now() + ms;
    while (Date.now() < deadline && this.#containers.has(id)) {
      try {
        Deno.statSync(`${CRUN_STATE_DIR}/${id}/status`);
        return;
      } catch { /* not yet */ }
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  /** The `crun exec` that runs `proc` (EXEC number `n`) inside running container `id`. */
  exec(id: string, n: number, proc: GuestProcess): CrunExec {
    const ctr = this.#containers.get(id);
    if (!ctr) throw new ExecError(127, `exec: no container ${id} in this VM`);
    return prepareCrunExec(ctr.spec, ctr.root, id, n, proc);
  }

  /**
   * `r` (a `crun exec`) with signals sent to the exec'd process itself (its pid from crun's pid
   * file): crun exec does not forward them, so a SIGKILL for a timed-out exec would otherwise end
   * crun and leave the process running. Before the pid file exists the signal goes to crun.
   * The exec's files are removed when it ends.
   */
  signalExec(x: CrunExec, r: Running): Running {
    const kill = (signo: number) => {
      let pid = 0;
      try {
        pid = Number.parseInt(Deno.readTextFileSync(x.pidFile).trim(), 10);
      } catch { /* not written yet */ }
      if (Number.isInteger(pid) && pid > 1) {
        try {
          c.kill(pid, signo);
          return;
        } catch { /* gone already: crun is ending */ }
      }
      r.signal(signo);
    };
    const done = r.done.finally(() => {
      for (const f of [x.pidFile, x.pidFile.replace(/\.pid$/, ".json")]) {
        try {
          Deno.removeSync(f);
        } catch { /* the container's bundle went with it */ }
      }
    });
    return { ...r, signal: kill, done };
  }

  /**
   * `r` (the `crun run` of container `id`) with signals delivered through `crun kill`: they reach
   * the container's process, crun sees it end, cleans up and exits with its status. Until crun
   * has created the container (or after it is gone) the signal goes to crun itself.
   */
  signalVia(id: string, r: Running): Running {
    const kill = (signo: number) => {
      try {
        const crun = crunCommand();
        const child = new Deno.Command(crun.program, {
          args: [...crunGlobalArgs(), "kill", id, String(signo)],
          env: envRecord(crun.env),
          stdin: "null",
          stdout: "null",
          stderr: "null",
        }).spawn();
        void child.status.then((st) => st.success || r.signal(signo), () => r.signal(signo));
      } catch {
        r.signal(signo);
      }
    };
    return {
      id: r.id,
      pid: r.pid,
      stdin: (data) => r.stdin(data),
      stdinEof: () => r.stdinEof(),
      signal: kill,
      resize: (cols, rows) => r.resize(cols, rows),
      done: r.done,
    };
  }

  /** Forgets container `id` and removes its crun state, overlay and files (its process ended). */
  release(id: string): void {
    const ctr = this.#containers.get(id);
    if (!ctr) return;
    this.#containers.delete(id);
    if (!ctr.own) return;
    try {
      const crun = crunCommand();
      new Deno.Command(crun.program, {
        args: [...crunGlobalArgs(), "delete", "--force", id],
        env: envRecord(crun.env),
        stdin: "null",
        stdout: "null",
        stderr: "null",
      }).outputSync(); // normally nothing is left: `crun run` deletes what it ran
    } catch { /* crun missing: nothing of it to delete */ }
    try {
      c.umountLazy(ctr.root);
    } catch (err) {
      this.log(`container ${id}: unmount ${ctr.root}: ${err}`);
    }
    try {
      Deno.removeSync(`${this.workDir}/containers/${id}`, { recursive: true });
    } catch (err) {
      this.log(`container ${id}: remove its files: ${err}`);
    }
  }
}
