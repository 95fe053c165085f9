/**
 * `nerdbox demo`: the README's main job on built-in defaults. Builds a busybox rootfs, starts a
 * tiny HTTP server on the host's loopback, boots a microVM with the default network (TSI under
 * libkrun, a private passt under QEMU) and runs a workload that shows its network and fetches
 * the host server through the gateway. Exits with the workload's status.
 */
import { parseArgs } from "node:util";
import { makeBusyboxRootfs } from "../vm/busybox_rootfs.ts";
import { planVm, resolveBackend } from "../vm/plan.ts";
import { startVm } from "../vm/launch.ts";
import { ensureStateRoot } from "../vm/run_state.ts";
import { RUN_STATE_ROOT } from "./run.ts";
import { parseBackend } from "../spec/backend.ts";
import type { Accel } from "../vm/types.ts";
import type { SandboxSpec } from "../spec/types.ts";

const USAGE = `Usage: nerdbox demo [--backend auto|libkrun|qemu] [--accel auto|kvm|tcg]

Boots a busybox container in a microVM with the default network, shows its addresses and routes,
and fetches a page from a server nerdbox starts on the host (reached through the VM's gateway).`;

/** The demo workload's shell script (fixed text; the port is a number nerdbox chose). */
export function demoScript(port: number): string {
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new RangeError(`port ${port}`);
  return [
    "echo '== ip addr'",
    "ip addr show",
    "echo '== ip route'",
    "ip route",
    "gw=$(ip route | awk '/^default/{print $3; exit}')",
    '[ -n "$gw" ] || gw=127.0.0.1',
    `echo "== wget http://$gw:${port}/ (the host's server, through the gateway)"`,
    `wget -q -O - "http://$gw:${port}/"`,
  ].join("\n");
}

/** Runs the demo; returns the workload's exit status (125 when nerdbox failed). */
export async function main(args: string[]): Promise<number> {
  let values;
  try {
    values = parseArgs({
      args,
      options: {
        backend: { type: "string", default: "auto" },
        accel: { type: "string", default: "auto" },
        help: { type: "boolean", short: "h" },
      },
      strict: true,
      allowPositionals: false,
    }).values;
  } catch (e) {
    console.error(`nerdbox demo: ${(e as Error).message}\n\n${USAGE}`);
    return 2;
  }
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const accel = values.accel as Accel;
  if (!["auto", "kvm", "tcg"].includes(accel)) {
    console.error(
      `nerdbox demo: --accel ${JSON.stringify(values.accel)}: expected auto, kvm or tcg`,
    );
    return 2;
  }
  let backendChoice;
  try {
    backendChoice = parseBackend(values.backend!, "--backend");
  } catch (e) {
    console.error(`nerdbox demo: ${(e as Error).message}`);
    return 2;
  }

  const id = `demo-${crypto.randomUUID().slice(0, 8)}`;
  await ensureStateRoot(RUN_STATE_ROOT);
  const stateDir = `${RUN_STATE_ROOT}/${id}`;
  let rootfs: string | undefined;
  let server: Deno.HttpServer | undefined;
  try {
    rootfs = await makeBusyboxRootfs();
    const hits: string[] = [];
    const ready = Promise.withResolvers<number>();
    server = Deno.serve({
      hostname: "127.0.0.1",
      port: 0,
      onListen: (a) => ready.resolve(a.port),
    }, (_req, info) => {
      hits.push((info.remoteAddr as Deno.NetAddr).hostname);
      return new Response("hello from the nerdbox host\n", { headers: { connection: "close" } });
    });
    const port = await ready.promise;
    console.error(`nerdbox demo: host server on 127.0.0.1:${port}; busybox rootfs in ${rootfs}`);
    const backend = await resolveBackend(backendChoice);
    const spec: SandboxSpec = {
      id,
      rootfs,
      process: {
        args: ["/bin/sh", "-c", demoScript(port)],
        env: ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root"],
        cwd: "/",
        uid: 0,
        gid: 0,
        terminal: false,
      },
      hostname: "nerdbox-demo",
      resources: { cpus: 1, memoryMiB: 256 },
      networks: [],
      ctrNetworks: [],
      ports: [],
      backend: backendChoice,
    };
    const plan = planVm(spec, { backend, stateDir, accel });
    console.error(`nerdbox demo: booting a ${backend} microVM (default network)…`);
    const started = performance.now();
    const handle = await startVm(plan, {
      stdout: new WritableStream({ write: (c) => Deno.stdout.write(c).then(() => {}) }),
      stderr: new WritableStream({ write: (c) => Deno.stderr.write(c).then(() => {}) }),
    });
    let exit;
    try {
      exit = await handle.exited;
    } finally {
      await handle.dispose();
    }
    const secs = ((performance.now() - started) / 1000).toFixed(1);
    if (exit.error) console.error(`nerdbox demo: ${exit.error}`);
    console.error(
      `nerdbox demo: workload exited ${exit.code} after ${secs} s; host server saw ` +
        `${hits.length} request(s)${hits.length ? ` from ${hits.join(", ")}` : ""}`,
    );
    return exit.code;
  } catch (e) {
    console.error(`nerdbox demo: ${(e as Error).message}`);
    return 125;
  } finally {
    await server?.shutdown();
    if (rootfs) await Deno.remove(rootfs, { recursive: true }).catch(() => {});
    await Deno.remove(stateDir, { recursive: true }).catch(() => {});
  }
}
