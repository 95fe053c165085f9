/**
 * Installs containerd 2.1 (Debian sid) and 1.7 (Debian trixie) privately, beside bookworm's 1.6:
 * a private apt sources list and package lists per suite (never the system's), `apt-get download`,
 * then `dpkg -x` into /opt/nerdbox/containerd-<major.minor>. The packages' glibc needs are checked
 * against the host's. Idempotent: does nothing when both trees are present.
 */
import { exists } from "../lib/fs.ts";

/** Root of nerdbox's private installs. */
export const PRIVATE_ROOT = "/opt/nerdbox";

/** A containerd release line and the Debian suite that carries it. */
export interface ContainerdRelease {
  /** `major.minor`, e.g. "2.1". */
  line: string;
  suite: string;
}

/** The containerd lines installed privately (1.6 is bookworm's own package). */
export const PRIVATE_CONTAINERD: ContainerdRelease[] = [
  { line: "2.1", suite: "sid" },
  { line: "1.7", suite: "trixie" },
];

/** The directory holding containerd `line`'s unpacked package (binaries under usr/bin). */
export function containerdDir(line: string): string {
  return `${PRIVATE_ROOT}/containerd-${line}`;
}

const dec = new TextDecoder();

/** Runs `cmd args` (in `cwd`); returns stdout, throws with the tail of stderr on failure. */
export async function run(cmd: string, args: string[], cwd?: string): Promise<string> {
  const out = await new Deno.Command(cmd, {
    args,
    cwd,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { DEBIAN_FRONTEND: "noninteractive" },
  }).output();
  if (!out.success) {
    const err = dec.decode(out.stderr).trim().split("\n").slice(-10).join("\n");
    throw new Error(`setup: ${cmd} ${args.join(" ")} failed (exit ${out.code}):\n${err}`);
  }
  return dec.decode(out.stdout);
}

/** apt options that point every list, cache and status path at a private per-suite directory. */
function aptOptions(dir: string): string[] {
  return [
    "-o",
    `Dir::Etc::sourcelist=${dir}/suite.sources`,
    "-o",
    "Dir::Etc::sourceparts=-",
    "-o",
    `Dir::State::Lists=${dir}/lists`,
    "-o",
    `Dir::Cache=${dir}/cache`,
    "-o",
    "Dir::State::status=/dev/null",
  ];
}

/**
 * Writes the private sources list for `suite` (binary packages, or `deb-src` source packages under
 * `<suite>-src`) and fetches its package lists; returns the apt options that use them.
 */
export async function prepareSuite(
  suite: string,
  types: "deb" | "deb-src" = "deb",
): Promise<string[]> {
  const dir = `${PRIVATE_ROOT}/apt/${suite}${types === "deb-src" ? "-src" : ""}`;
  await Deno.mkdir(`${dir}/lists/partial`, { recursive: true });
  await Deno.mkdir(`${dir}/cache/archives/partial`, { recursive: true });
  await Deno.writeTextFile(
    `${dir}/suite.sources`,
    [
      `Types: ${types}`,
      "URIs: http://deb.debian.org/debian",
      `Suites: ${suite}`,
      "Components: main",
      "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg",
      "",
    ].join("\n"),
  );
  const opts = aptOptions(dir);
  await run("apt-get", [...opts, "update", "-q"]);
  return opts;
}

/** The host's glibc version ("2.36" on bookworm). */
export async function hostGlibc(): Promise<string> {
  const out = await run("dpkg-query", ["-W", "-f", "${Version}", "libc6"]);
  return out.split("-")[0];
}

/** Whether dotted version `have` is at least `need` ("1.8.6" ≥ "1.7"). */
export function versionAtLeast(have: string, need: string): boolean {
  const a = have.split(".").map(Number);
  const b = need.split(".").map(Number);
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    if ((a[i] ?? 0) !== (b[i] ?? 0)) return (a[i] ?? 0) > (b[i] ?? 0);
  }
  return true;
}

/** The `libc6 (>= X)` a .deb's Depends asks for, or "" when none. */
export function glibcNeed(depends: string): string {
  return /libc6 \(>= ([0-9.]+)\)/.exec(depends)?.[1] ?? "";
}

/**
 * Downloads `pkg` from `suite` (with a private list) and unpacks it into `dest`. Refuses a package
 * whose libc6 need is newer than the host's glibc, naming both versions. Returns the deb version.
 */
export async function installPrivateDeb(
  suite: string,
  pkg: string,
  dest: string,
  opts?: string[],
): Promise<string> {
  const aptOpts = opts ?? await prepareSuite(suite);
  const tmp = await Deno.makeTempDir({ prefix: "nerdbox-deb-" });
  try {
    await run("apt-get", [...aptOpts, "download", "-q", pkg], tmp);
    const deb = [...Deno.readDirSync(tmp)].find((e) => e.name.endsWith(".deb"));
    if (!deb) throw new Error(`setup: apt-get download ${pkg} (${suite}) left no .deb`);
    const file = `${tmp}/${deb.name}`;
    const version = (await run("dpkg-deb", ["-f", file, "Version"])).trim();
    const need = glibcNeed(await run("dpkg-deb", ["-f", file, "Depends"]));
    const have = await hostGlibc();
    if (need && !versionAtLeast(have, need)) {
      throw new Error(
        `setup: ${pkg} ${version} from ${suite} needs glibc ${need}, this host has ${have}`,
      );
    }
    await Deno.remove(`${dest}.tmp`, { recursive: true }).catch(() => {});
    await Deno.mkdir(`${dest}.tmp`, { recursive: true });
    await run("dpkg", ["-x", file, `${dest}.tmp`]);
    await Deno.writeTextFile(`${dest}.tmp/DEB_VERSION`, `${pkg} ${version} ${suite}\n`);
    await Deno.remove(dest, { recursive: true }).catch(() => {});
    await Deno.rename(`${dest}.tmp`, dest);
    return version;
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
}

/** Installs every private containerd line that is missing; checks the unpacked line matches. */
export async function installPrivateContainerd(): Promise<void> {
  for (const { line, suite } of PRIVATE_CONTAINERD) {
    const dir = containerdDir(line);
    if (await exists(`${dir}/usr/bin/containerd`)) continue;
    console.error(`setup: installing containerd ${line} from Debian ${suite} into ${dir}`);
    const version = await installPrivateDeb(suite, "containerd", dir);
    if (!version.startsWith(`${line}.`)) {
      await Deno.remove(dir, { recursive: true });
      throw new Error(
        `setup: Debian ${suite} now carries containerd ${version}, not ${line}.x: update ` +
          `PRIVATE_CONTAINERD in scripts/setup_containerd.ts`,
      );
    }
  }
}

/** Debian sid's gvisor-tap-vsock (`gvproxy`), unpacked privately; binary at usr/bin/gvproxy. */
export const GVPROXY_DIR = `${PRIVATE_ROOT}/gvproxy`;

/** Installs sid's gvproxy (bookworm has none) unless present. */
export async function installPrivateGvproxy(): Promise<void> {
  if (await exists(`${GVPROXY_DIR}/usr/bin/gvproxy`)) return;
  console.error(`setup: installing gvproxy from Debian sid into ${GVPROXY_DIR}`);
  await installPrivateDeb("sid", "gvproxy", GVPROXY_DIR);
}
