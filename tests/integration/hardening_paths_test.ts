/**
 * Paths a user hands nerdbox: provider sockets and network namespaces that are relative, too long
 * for sun_path, symlinks to somewhere else, or not what they claim to be are refused with the
 * reason, by the parser, by the probe (`nerdbox inspect --probe`) and by `nerdbox run`, and a
 * refused run leaves nothing behind.
 */
import { doesNotMatch, equal, match, ok } from "node:assert/strict";
import { parseNetworkValue } from "../../lib/spec/network.ts";
import { buildSandboxSpec } from "../../lib/spec/sandbox.ts";
import { formatSpecError, SpecValidationError } from "../../lib/spec/types.ts";
import { probeSocket } from "../../lib/net/probe.ts";
import { NetnsError, validateNetnsPath } from "../../lib/net/netns.ts";
import { nerdbox, runArgv } from "../helpers/nerdbox_cli.ts";
import { makeBusyboxRootfs } from "../helpers/rootfs.ts";
import { assertNothingLeft, takeHostSnapshot } from "../helpers/host_snapshot.ts";

const MAC = "02:00:00:00:00:01";
const netErrors = (socket: string, mode = "unixstream") =>
  parseNetworkValue(`socket=${socket},mode=${mode},mac=${MAC}`, "--net #0", 0).errors
    .map(formatSpecError);

Deno.test("paths (parser): relative, NUL and too-long socket paths are refused with the reason", () => {
  match(netErrors("run/p.sock")[0], /socket="run\/p.sock": expected an absolute path/);
  match(netErrors("./p.sock")[0], /expected an absolute path/);
  match(
    netErrors("/" + "a".repeat(107))[0],
    /expected at most 107 bytes \(the size of sun_path\), got 108/,
  );
  match(netErrors("/" + "a".repeat(100), "unixgram")[0], /-krun.sock.*at most 97 bytes, got 101/);
  equal(netErrors("/" + "a".repeat(106)).length, 0, "107 bytes fit");
});

Deno.test("paths (parser): a relative --netns or rootfs is refused", () => {
  try {
    buildSandboxSpec({
      id: "p",
      rootfs: "rel/rootfs",
      netns: "run/netns/x",
      process: { args: ["/bin/true"], env: [], cwd: "/", uid: 0, gid: 0, terminal: false },
    });
    throw new Error("accepted relative paths");
  } catch (e) {
    ok(e instanceof SpecValidationError);
    match(e.message, /rootfs: .*expected an absolute path/);
    match(e.message, /--netns: .*expected an absolute path/);
  }
});

async function withDir(fn: (dir: string) => Promise<void>) {
  const dir = await Deno.makeTempDir({ prefix: "nbx-paths-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("paths (probe): not a socket, missing, a directory: refused with the reason", async () => {
  await withDir(async (dir) => {
    await Deno.writeTextFile(`${dir}/file`, "x");
    const f = await probeSocket(`${dir}/file`, "unixstream");
    equal(f.status, "not-a-socket");
    match(f.message, /regular file, not a UNIX socket/);
    equal((await probeSocket(`${dir}/nothing`, "unixstream")).status, "missing");
    equal((await probeSocket(dir, "unixstream")).status, "not-a-socket");
  });
});

// GAP (lib/net/probe.ts): the probe stat()s through symlinks, so a provider path that is a symlink
// to some other socket (say /run/containerd/containerd.sock) probes "ok", while `nerdbox run`
// under QEMU refuses the same path (lstat: "is not a UNIX socket"). The two should agree, and the
// reason should say "is a symlink".
Deno.test("paths (probe): a symlink to a socket elsewhere is refused as a symlink", async () => {
  await withDir(async (dir) => {
    using _l = Deno.listen({ transport: "unix", path: `${dir}/real.sock` });
    await Deno.symlink(`${dir}/real.sock`, `${dir}/link.sock`);
    const r = await probeSocket(`${dir}/link.sock`, "unixstream");
    ok(!r.ok, `probe of a symlink: ${r.status}: ${r.message}`);
    match(r.message, /symlink/);
  });
});

Deno.test("paths (netns): relative, symlink, regular file, another namespace kind: refused", async () => {
  await withDir(async (dir) => {
    await Deno.writeTextFile(`${dir}/file`, "x");
    await Deno.symlink("/proc/self/ns/net", `${dir}/link`);
    const cases: [string, RegExp][] = [
      ["run/netns/x", /expected an absolute path/],
      [`${dir}/../x`, /expected a normalised path/],
      [`${dir}/link`, /is a symlink; give the namespace file itself/],
      [`${dir}/file`, /is not a namespace file \(filesystem magic/],
      [`${dir}/missing`, /does not exist/],
      ["/proc/self/ns/mnt", /namespace of another kind|is a symlink/],
    ];
    for (const [path, why] of cases) {
      try {
        validateNetnsPath(path, "--netns");
        throw new Error(`accepted ${path}`);
      } catch (e) {
        ok(e instanceof NetnsError, String(e));
        match(e.message, why);
        ok(e.message.includes(JSON.stringify(path)), "the message names the path");
      }
    }
  });
});

/** Runs `nerdbox run --backend qemu` expecting a refusal; checks nothing of `id` is left. */
async function refusedRun(extra: string[], why: RegExp) {
  const dir = await Deno.makeTempDir({ prefix: "nbx-paths-run-" });
  const id = `nbx-paths-${crypto.randomUUID().slice(0, 8)}`;
  const before = await takeHostSnapshot({ aspects: ["processes", "runFiles", "mounts"] });
  try {
    await makeBusyboxRootfs(`${dir}/rootfs`);
    const r = await nerdbox(
      runArgv(`${dir}/rootfs`, ["true"], {
        name: id,
        backend: "qemu",
        accel: "tcg",
        flags: [...extra.map((a) => a.replaceAll("$DIR", dir))],
      }),
    );
    equal(r.code, 125, r.stderr);
    match(r.stderr, why);
    doesNotMatch(r.stderr, /apt-get install/, "the reason is the path, not a missing package");
  } finally {
    await Deno.remove(dir, { recursive: true });
    await assertNothingLeft(before, {
      aspects: ["processes", "runFiles", "mounts"],
      only: new RegExp(id),
    });
  }
}

Deno.test("paths (run): a provider path that is a regular file is refused, nothing left", async () => {
  const file = await Deno.makeTempFile({ prefix: "nbx-paths-" });
  try {
    await refusedRun(
      ["--net", `socket=${file},mode=unixstream,mac=${MAC}`],
      /socket .*is not a UNIX socket/,
    );
  } finally {
    await Deno.remove(file);
  }
});

Deno.test("paths (run): a provider path that is a symlink to a socket is refused", async () => {
  const dir = await Deno.makeTempDir({ prefix: "nbx-paths-" });
  try {
    using _l = Deno.listen({ transport: "unix", path: `${dir}/real.sock` });
    await Deno.symlink(`${dir}/real.sock`, `${dir}/link.sock`);
    await refusedRun(
      ["--net", `socket=${dir}/link.sock,mode=unixstream,mac=${MAC}`],
      /socket .*link\.sock.*is not a UNIX socket/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("paths (run): --netns that is a regular file or a symlink is refused, nothing left", async () => {
  const dir = await Deno.makeTempDir({ prefix: "nbx-paths-" });
  try {
    await Deno.writeTextFile(`${dir}/file`, "x");
    await Deno.symlink("/proc/self/ns/net", `${dir}/link`);
    // The QEMU backend validates --netns up front (once it failed inside setns() as "cannot run
    // passt (apt-get install passt): … Invalid argument", a misleading reason).
    await refusedRun(["--netns", `${dir}/file`], /--netns .*is not a namespace file/);
    await refusedRun(["--netns", `${dir}/link`], /--netns .*is a symlink/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

// GAP (lib/vm/qemu.ts): only mode=unixstream providers are checked before QEMU starts; a
// mode=unixgram provider socket that does not exist (or disappeared) is not noticed: QEMU's dgram
// netdev sends into the void and the run "succeeds" without a network.
Deno.test("paths (run): a mode=unixgram provider socket that does not exist is refused", async () => {
  const dir = await Deno.makeTempDir({ prefix: "nbx-paths-" });
  try {
    await refusedRun(
      ["--net", `socket=${dir}/gone.sock,mode=unixgram,mac=${MAC},addr=10.9.0.2/24`],
      /socket .*gone\.sock.*(does not exist|not a UNIX socket)/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
