/**
 * Host-network VMs never take over the host: `nerdbox run --netns <the host's netns>` and the shim
 * under ctr (`--net-host`, and a spec that names the host's netns as CRI does for a host-network
 * pod's containers) boot real QEMU guests with a private passt network. The host's links,
 * addresses, routes and qdiscs are identical before, while the VM runs, and after.
 */
import assert from "node:assert/strict";
import { makeBusyboxRootfs } from "../helpers/rootfs.ts";
import { NERDBOX, runArgv } from "../helpers/nerdbox_cli.ts";
import { IMAGE, importBusyboxImage, RUNTIME, startContainerd } from "../helpers/containerd.ts";
import {
  diffHostSnapshots,
  type HostSnapshot,
  takeHostSnapshot,
} from "../helpers/host_snapshot.ts";

const NET_ASPECTS = ["links", "addrs", "routes", "qdiscs"] as const;
/** The host's netns as this test names it (tests run in the host's namespace). */
const HOST_NETNS = `/proc/${Deno.pid}/ns/net`;
/** What the guest prints: its routes (passt gives it a default route), then a marker. */
const GUEST_SCRIPT = "ip -4 route; echo guest-ready; sleep 4";

const snapshot = () => takeHostSnapshot({ aspects: NET_ASPECTS });

function assertSame(before: HostSnapshot, now: HostSnapshot, when: string): void {
  const diff = diffHostSnapshots(before, now, { addedOnly: false });
  assert.equal(diff, "", `host network state changed ${when}:\n${diff}`);
}

/**
 * Spawns `cmd args`, snapshots the host once the guest printed its marker, waits for the end;
 * returns stdout. Asserts exit 0 and the host unchanged during and after.
 */
async function runChecked(cmd: string, args: string[]): Promise<string> {
  const before = await snapshot();
  const child = new Deno.Command(cmd, { args, stdin: "null", stdout: "piped", stderr: "piped" })
    .spawn();
  const stderr = new Response(child.stderr).text();
  let stdout = "";
  const dec = new TextDecoder();
  let during: HostSnapshot | undefined;
  for await (const chunk of child.stdout) {
    stdout += dec.decode(chunk, { stream: true });
    if (during === undefined && stdout.includes("guest-ready")) during = await snapshot();
  }
  const status = await child.status;
  assert.equal(status.code, 0, `${cmd} ${args.join(" ")}: ${await stderr}\n${stdout}`);
  assert.ok(during !== undefined, `the guest never printed its marker: ${stdout}`);
  assertSame(before, during, "while the VM ran");
  assertSame(before, await snapshot(), "after the VM ended");
  return stdout;
}

Deno.test("nerdbox run --netns <host netns> (QEMU): private passt, host untouched", async () => {
  const dir = await Deno.makeTempDir({ prefix: "nb-hostnet-" });
  try {
    await makeBusyboxRootfs(`${dir}/rootfs`);
    const out = await runChecked(
      NERDBOX,
      runArgv(`${dir}/rootfs`, ["sh", "-c", GUEST_SCRIPT], {
        backend: "qemu",
        flags: ["--netns", HOST_NETNS],
      }),
    );
    assert.match(out, /^default via /m, "the guest has passt's default route");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("shim under ctr: host-network containers get a private network, host untouched", async (t) => {
  const ctd = await startContainerd("nerdbox-hostnet-test");
  try {
    await importBusyboxImage(ctd);
    const ctr = (id: string, extra: string[]) => [
      "-a",
      ctd.address,
      "run",
      "--rm",
      "--runtime",
      RUNTIME,
      ...extra,
      IMAGE,
      id,
      "sh",
      "-c",
      GUEST_SCRIPT,
    ];
    await t.step("ctr run --net-host (no netns in the spec)", async () => {
      const out = await runChecked("ctr", ctr("hostnet1", ["--net-host"]));
      assert.match(out, /^default via /m);
    });
    await t.step("a spec naming the host's netns (CRI's host-network pod containers)", async () => {
      const out = await runChecked("ctr", ctr("hostnet2", ["--with-ns", `network:${HOST_NETNS}`]));
      assert.match(out, /^default via /m);
    });
  } finally {
    await ctd.stop();
  }
});
