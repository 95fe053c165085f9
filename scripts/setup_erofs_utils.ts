/**
 * A private mkfs.erofs ≥ 1.7 (containerd 2.1's erofs differ runs `mkfs.erofs --tar=f`; bookworm
 * has 1.5 and the Debian binaries of later versions need a newer glibc): erofs-utils' source
 * package from Debian trixie, fetched through a private `deb-src` list (never the system's), built
 * with bookworm's compilers into /opt/nerdbox/erofs-utils (binaries in bin/). Idempotent: does
 * nothing when a working mkfs.erofs ≥ 1.7 is already there.
 */
import { exists } from "../lib/fs.ts";
import { prepareSuite, PRIVATE_ROOT, run, versionAtLeast } from "./setup_containerd.ts";

/** Where the private erofs-utils is installed (mkfs.erofs at `bin/mkfs.erofs`). */
export const EROFS_UTILS_DIR = `${PRIVATE_ROOT}/erofs-utils`;

/** The oldest erofs-utils with `--tar=f` (what containerd's erofs differ needs). */
export const EROFS_UTILS_MIN = "1.7";

/** The Debian suite whose erofs-utils source is built. */
const SOURCE_SUITE = "trixie";

/** bookworm packages the build needs (compilers, autotools, the libraries mkfs.erofs links). */
export const EROFS_BUILD_PACKAGES = [
  "gcc",
  "make",
  "autoconf",
  "automake",
  "libtool",
  "pkg-config",
  "dpkg-dev",
  "uuid-dev",
  "zlib1g-dev",
  "liblz4-dev",
];

/** The version `mkfs.erofs --version` prints ("mkfs.erofs (erofs-utils) 1.8.6"), or "". */
export function parseMkfsVersion(out: string): string {
  return /\(erofs-utils\) ([0-9]+(?:\.[0-9]+)+)/.exec(out)?.[1] ?? "";
}

/** The version of the mkfs.erofs at `bin`, or "" when it is missing or does not say. */
async function mkfsVersion(bin: string): Promise<string> {
  if (!(await exists(bin))) return "";
  const out = await new Deno.Command(bin, { args: ["--version"], stdout: "piped", stderr: "null" })
    .output().catch(() => undefined);
  return out?.success ? parseMkfsVersion(new TextDecoder().decode(out.stdout)) : "";
}

async function installBuildPackages(): Promise<void> {
  const out = await new Deno.Command("dpkg-query", {
    args: ["-W", "-f", "${Package} ${db:Status-Status}\n", ...EROFS_BUILD_PACKAGES],
    stdout: "piped",
    stderr: "null",
  }).output();
  const have = new Set(
    new TextDecoder().decode(out.stdout).split("\n").filter((l) => l.endsWith(" installed"))
      .map((l) => l.split(" ")[0]),
  );
  const missing = EROFS_BUILD_PACKAGES.filter((p) => !have.has(p));
  if (missing.length === 0) return;
  console.error(`setup: installing erofs-utils build packages ${missing.join(" ")}`);
  await run("apt-get", ["update", "-q"]);
  await run("apt-get", ["install", "-y", "-q", "--no-install-recommends", ...missing]);
}

/** Checks that `bin` makes an erofs image from a tar stream with containerd's differ options. */
async function checkTarMode(bin: string, work: string): Promise<void> {
  await Deno.mkdir(`${work}/t/etc`, { recursive: true });
  await Deno.writeTextFile(`${work}/t/etc/hello`, "hello\n");
  await run("tar", ["-C", `${work}/t`, "-cf", `${work}/t.tar`, "."]);
  const img = `${work}/t.erofs`;
  const tar = await Deno.open(`${work}/t.tar`);
  const mk = await new Deno.Command(bin, {
    args: ["--tar=f", "--aufs", "--quiet", "-Enoinline_data", img],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  await tar.readable.pipeTo(mk.stdin);
  const res = await mk.output();
  const head = res.success ? (await Deno.readFile(img)).subarray(1024, 1028) : new Uint8Array();
  // erofs superblock magic 0xE0F5E1E2 (little-endian) at byte 1024
  if (!res.success || head.join(",") !== "226,225,245,224") {
    throw new Error(
      `setup: ${bin} --tar=f did not make an erofs image: ` +
        new TextDecoder().decode(res.stderr).trim(),
    );
  }
}

/** Builds and installs the private mkfs.erofs unless a working one ≥ 1.7 is present. */
export async function installPrivateErofsUtils(): Promise<void> {
  const bin = `${EROFS_UTILS_DIR}/bin/mkfs.erofs`;
  if (versionAtLeast(await mkfsVersion(bin) || "0", EROFS_UTILS_MIN)) return;
  console.error(
    `setup: building erofs-utils from Debian ${SOURCE_SUITE}'s source into ${EROFS_UTILS_DIR}`,
  );
  await installBuildPackages();
  const opts = await prepareSuite(SOURCE_SUITE, "deb-src");
  const work = await Deno.makeTempDir({ prefix: "nerdbox-erofs-utils-" });
  const stage = `${EROFS_UTILS_DIR}.stage`;
  try {
    await run("apt-get", [
      ...opts,
      "-o",
      "APT::Sandbox::User=root",
      "source",
      "--download-only",
      "-q",
      "erofs-utils",
    ], work);
    const dsc = [...Deno.readDirSync(work)].find((e) => e.name.endsWith(".dsc"))?.name;
    if (!dsc) throw new Error(`setup: apt-get source erofs-utils (${SOURCE_SUITE}) left no .dsc`);
    const version = /_([0-9.]+)-[^_]*\.dsc$/.exec(dsc)?.[1] ?? "";
    if (!versionAtLeast(version || "0", EROFS_UTILS_MIN)) {
      throw new Error(
        `setup: Debian ${SOURCE_SUITE} has erofs-utils ${
          version || dsc
        }, need ≥ ${EROFS_UTILS_MIN}`,
      );
    }
    const src = `${work}/src`;
    await run("dpkg-source", ["--no-check", "-x", dsc, src], work);
    await run("./autogen.sh", [], src);
    await run("./configure", [
      `--prefix=${EROFS_UTILS_DIR}`,
      "--disable-fuse",
      "--disable-lzma",
      "--enable-lz4",
      "--without-selinux",
    ], src);
    await run("make", [`-j${navigator.hardwareConcurrency}`], src);
    // staged beside the target (same filesystem) and renamed into place once it works
    await Deno.remove(stage, { recursive: true }).catch(() => {});
    await run("make", ["install", `DESTDIR=${stage}`], src);
    const built = `${stage}${EROFS_UTILS_DIR}`;
    await checkTarMode(`${built}/bin/mkfs.erofs`, work);
    await Deno.writeTextFile(`${built}/SOURCE`, `erofs-utils ${dsc} ${SOURCE_SUITE}\n`);
    await Deno.remove(EROFS_UTILS_DIR, { recursive: true }).catch(() => {});
    await Deno.rename(built, EROFS_UTILS_DIR);
  } finally {
    await Deno.remove(work, { recursive: true });
    await Deno.remove(stage, { recursive: true }).catch(() => {});
  }
  const have = await mkfsVersion(bin);
  if (!versionAtLeast(have || "0", EROFS_UTILS_MIN)) {
    throw new Error(`setup: the built ${bin} reports version "${have}", need ≥ ${EROFS_UTILS_MIN}`);
  }
}

if (import.meta.main) await installPrivateErofsUtils();
