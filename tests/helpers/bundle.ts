/** Minimal OCI bundles for tests and benches: a `config.json` beside a rootfs directory. */
import { makeBusyboxRootfs } from "../../lib/vm/busybox_rootfs.ts";

/** What goes into a test bundle's config.json (ociVersion 1.0.2, cwd `/`). */
export interface TestBundle {
  /** process.args. */
  args: string[];
  /** process.env (default PATH=/bin:/sbin:/usr/bin). */
  env?: string[];
  /** hostname, when given. */
  hostname?: string;
  /** root.path (default "rootfs"). */
  root?: string;
  /** A netns path: linux.namespaces gets a new pid namespace and this network namespace. */
  netns?: string;
  /** annotations, when given. */
  annotations?: Record<string, string>;
  /** What `<bundle>/rootfs` holds: a busybox rootfs, or an empty directory (the default). */
  rootfs?: "busybox" | "empty";
}

/** Writes `<bundle>/config.json` and creates `<bundle>/rootfs` as `b` says. */
export async function writeBundle(bundle: string, b: TestBundle): Promise<void> {
  if (b.rootfs === "busybox") await makeBusyboxRootfs(`${bundle}/rootfs`);
  else await Deno.mkdir(`${bundle}/rootfs`, { recursive: true });
  await Deno.writeTextFile(
    `${bundle}/config.json`,
    JSON.stringify({
      ociVersion: "1.0.2",
      root: { path: b.root ?? "rootfs" },
      process: { args: b.args, cwd: "/", env: b.env ?? ["PATH=/bin:/sbin:/usr/bin"] },
      hostname: b.hostname,
      annotations: b.annotations,
      linux: b.netns === undefined
        ? undefined
        : { namespaces: [{ type: "pid" }, { type: "network", path: b.netns }] },
    }),
  );
}
