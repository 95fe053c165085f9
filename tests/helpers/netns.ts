/**
 * Test helper: a private network namespace with `lo` up and a veth pair (`v0`, `v1`, both inside)
 * where v0 has an address and the default route, so passt finds a routable interface. Processes
 * are run inside it with `nsenter --net=<path>`; everything is removed by `delete()`.
 */

/** A test network namespace. */
import { validateNetnsPath } from "../../lib/net/netns.ts";
import type { NetnsPath } from "../../lib/spec/netns_path.ts";

export interface TestNetns {
  name: string;
  /** `/run/netns/<name>`. */
  path: NetnsPath;
  /** v0's address (the default route's source). */
  address: string;
  /** The default gateway (v0's peer side, unanswered). */
  gateway: string;
  /** Runs a command inside the namespace to completion. */
  run(cmd: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }>;
  /** Spawns a command inside the namespace (piped stdout/stderr, null stdin unless `stdin`). */
  spawn(cmd: string, args: string[], stdin?: "piped" | "null"): Deno.ChildProcess;
  /** Deletes the namespace (idempotent). */
  delete(): Promise<void>;
}

async function ip(args: string[]): Promise<void> {
  const out = await new Deno.Command("ip", { args, stdout: "null", stderr: "piped" }).output();
  if (!out.success) {
    throw new Error(`ip ${args.join(" ")}: ${new TextDecoder().decode(out.stderr).trim()}`);
  }
}

/** A short unique name with the caller's prefix (≤ 15 chars, fits interface names too). */
export function uniqueNetnsName(prefix: string): string {
  return `${prefix}${crypto.randomUUID().replaceAll("-", "").slice(0, 15 - prefix.length)}`;
}

/**
 * Creates the namespace. `defaultRoute: false` leaves it with only `lo` and an unrouted veth, the
 * situation where passt must refuse to start.
 */
export async function makeTestNetns(
  prefix = "nbxq",
  opts: { defaultRoute?: boolean; subnet?: string } = {},
): Promise<TestNetns> {
  const name = uniqueNetnsName(prefix);
  const path = `/run/netns/${name}`;
  const base = opts.subnet ?? "10.77.0";
  const address = `${base}.2`;
  const gateway = `${base}.1`;
  await ip(["netns", "add", name]);
  const del = async () => {
    await new Deno.Command("ip", { args: ["netns", "del", name], stdout: "null", stderr: "null" })
      .output();
  };
  try {
    await ip(["-n", name, "link", "set", "lo", "up"]);
    await ip(["-n", name, "link", "add", "v0", "type", "veth", "peer", "name", "v1"]);
    await ip(["-n", name, "addr", "add", `${address}/24`, "dev", "v0"]);
    await ip(["-n", name, "link", "set", "v0", "up"]);
    await ip(["-n", name, "link", "set", "v1", "up"]);
    if (opts.defaultRoute !== false) {
      await ip(["-n", name, "route", "add", "default", "via", gateway, "dev", "v0"]);
    }
  } catch (err) {
    await del();
    throw err;
  }
  const nsArgs = (cmd: string, args: string[]) => [`--net=${path}`, "--", cmd, ...args];
  return {
    name,
    path: validateNetnsPath(path, "test netns"),
    address,
    gateway,
    async run(cmd, args) {
      const out = await new Deno.Command("nsenter", {
        args: nsArgs(cmd, args),
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).output();
      const dec = new TextDecoder();
      return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
    },
    spawn(cmd, args, stdin = "null") {
      return new Deno.Command("nsenter", {
        args: nsArgs(cmd, args),
        stdin,
        stdout: "piped",
        stderr: "piped",
      }).spawn();
    },
    delete: del,
  };
}
