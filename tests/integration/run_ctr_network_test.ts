/**
 * `io.containerd.nerdbox.ctr.network.N` and `ctr.dns` end to end: `nerdbox run --backend qemu
 * --bundle` with a passt NIC (network.0, run in a test netns) and a ctr network on it. Inside the
 * guest the NIC has the ctr ifname (`%d` filled in) and MAC, its own address plus the ctr
 * addresses, the default routes via the ctr gateways, resolv.conf from ctr.dns, and still
 * carries traffic (passt answers the new MAC). Without a NIC the ctr network is refused.
 */
import assert from "node:assert/strict";
import { makeTestNetns } from "../helpers/netns.ts";
import { lineWatcher } from "../helpers/qemu_vm.ts";
import { nerdbox, processesMatching } from "../helpers/nerdbox_cli.ts";
import { startPasst } from "../../lib/net/passt.ts";
import { RUN_STATE_ROOT } from "../../lib/cli/run.ts";
import { writeBundle } from "../helpers/bundle.ts";

const P = "io.containerd.nerdbox.";
const HTTP_PEER = new URL("../helpers/qemu_http_peer.ts", import.meta.url).pathname;

/** A bundle with a busybox rootfs and these annotations; fn gets its dir and a sandbox id. */
async function withBundle(
  annotations: Record<string, string>,
  script: string,
  fn: (bundle: string, id: string) => Promise<void>,
): Promise<void> {
  const bundle = await Deno.makeTempDir({ prefix: "nb-ctrnet-" });
  const id = `nb-ctrnet-${crypto.randomUUID().slice(0, 8)}`;
  try {
    await writeBundle(bundle, {
      args: ["/bin/sh", "-c", script],
      env: ["PATH=/bin:/sbin"],
      hostname: "ctrnet",
      annotations,
      rootfs: "busybox",
    });
    await fn(bundle, id);
  } finally {
    await Deno.remove(bundle, { recursive: true });
    const left = [];
    for await (const e of Deno.readDir(RUN_STATE_ROOT)) {
      if (e.name.startsWith(`${id}-`)) left.push(e.name);
    }
    assert.deepEqual(left, [], "the state dir is removed");
    assert.deepEqual(await processesMatching(`${RUN_STATE_ROOT}/${id}-`), [], "no VMM left");
  }
}

/** A test netns with an HTTP peer on 0.0.0.0:18093 and a passt for the VM's NIC. */
async function withPasst(
  fn: (socket: string, nonce: string, peer: ReturnType<typeof lineWatcher>) => Promise<void>,
): Promise<void> {
  const ns = await makeTestNetns("nbxcn");
  const dir = `/run/nbx-ctrnet-${crypto.randomUUID().slice(0, 8)}`;
  await Deno.mkdir(dir, { mode: 0o755 });
  const nonce = crypto.randomUUID().slice(0, 8);
  const peer = ns.spawn(Deno.execPath(), ["run", "-A", HTTP_PEER, "0.0.0.0", "18093", nonce]);
  const peerOut = lineWatcher(peer);
  const passt = await startPasst({ dir: `${dir}/passt`, netns: ns.path });
  try {
    await peerOut.wait(/ready/);
    await fn(passt.socket, nonce, peerOut);
  } finally {
    await passt.stop();
    peer.kill("SIGTERM");
    await peer.status;
    await ns.delete();
    await Deno.remove(dir, { recursive: true });
  }
}

/** Runs the bundle under QEMU; returns the workload's stdout split at `== NAME` markers. */
async function runParts(bundle: string, id: string): Promise<(name: string) => string> {
  const r = await nerdbox(["run", "--name", id, "--backend", "qemu", "--bundle", bundle]);
  assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
  return (name: string) =>
    r.stdout.split(`== ${name}\n`)[1]?.split(/(?<=\n)== /)[0] ?? assert.fail(r.stdout);
}

const SCRIPT = [
  "echo '== link'; ip -o link show",
  "echo '== addr'; ip -o addr show",
  "echo '== route'; ip route",
  "echo '== route6'; ip -6 route",
  "echo '== resolv'; cat /etc/resolv.conf",
  "echo '== wget'; wget -q -O - http://10.77.0.1:18093/ctr",
].join("\n");

const VMMAC = "52:54:00:c7:00:01";
const MAC = "02:aa:bb:cc:dd:01";

Deno.test("run --backend qemu: ctr.network renames, re-MACs and addresses the NIC; ctr.dns is resolv.conf", () =>
  withPasst((socket, nonce, peer) =>
    withBundle(
      {
        [`${P}network.0`]: `socket=${socket},mode=unixstream,mac=${VMMAC},addr=10.77.0.2/24`,
        [`${P}ctr.network.0`]: `vmmac=${VMMAC},ifname=ctr%d,mac=${MAC},addr=10.99.0.3/24,` +
          `addr=fd00:99::3/64,gw=10.99.0.1,gw=fd00:99::1`,
        [`${P}ctr.dns`]: "nameserver=10.99.0.53,search=ctr.example,options=ndots:3," +
          "domain=corp.example",
      },
      SCRIPT,
      async (bundle, id) => {
        // inspect explains the same annotations (and says what the guest does with them)
        const insp = await nerdbox(["inspect", "--spec", bundle]);
        assert.equal(insp.code, 0, insp.stderr);
        assert.match(insp.stdout, /guest +is eth0 itself/);
        assert.match(insp.stdout, /gw +10\.99\.0\.1, fd00:99::1 \(default route; replaces/);

        const part = await runParts(bundle, id);
        // the NIC is the container interface: its name (ctr%d -> ctr0) and its MAC
        const links = part("link");
        assert.match(links, new RegExp(`^\\d+: ctr0: .*link/ether ${MAC} `, "m"), links);
        assert.doesNotMatch(links, /: eth\d+:/, links);
        // the network's own address and the ctr addresses
        const addrs = part("addr");
        for (const a of ["inet 10.77.0.2/24", "inet 10.99.0.3/24", "inet6 fd00:99::3/64"]) {
          assert.match(addrs, new RegExp(`ctr0\\s+${a.replaceAll(".", "\\.")} `), addrs);
        }
        // ctr gw replaced the network's default route (10.77.0.1 would be its static gateway)
        assert.deepEqual(part("route").match(/^default .*$/gm)?.map((l) => l.trim()), [
          "default via 10.99.0.1 dev ctr0",
        ]);
        assert.match(part("route6"), /^default via fd00:99::1 dev ctr0 /m);
        assert.equal(
          part("resolv"),
          "# written by nerdbox guest init\ndomain corp.example\nsearch ctr.example\n" +
            "nameserver 10.99.0.53\noptions ndots:3\n",
        );
        // frames from the new MAC still flow: passt carried the request to the netns's server
        assert.match(part("wget"), new RegExp(`peer-ok ${nonce} /ctr`));
        await peer.wait(/req \/ctr 127\.0\.0\.1/, 5000);
      },
    )
  ));

Deno.test("run --backend qemu: on a DHCP network the lease stays, ctr gw and ctr.dns win over it", () =>
  withPasst((socket, nonce) =>
    withBundle(
      {
        [`${P}network.0`]: `socket=${socket},mode=unixstream,mac=${VMMAC},dhcp=true`,
        [`${P}ctr.network.0`]: `vmmac=${VMMAC},mac=${MAC},addr=10.99.0.3/24,gw=10.99.0.1`,
        [`${P}ctr.dns`]: "nameserver=10.99.0.53",
      },
      SCRIPT,
      async (bundle, id) => {
        const part = await runParts(bundle, id);
        // no ifname: the NIC keeps eth0; DHCP ran with the new MAC and got passt's lease
        assert.match(part("link"), new RegExp(`^\\d+: eth0: .*link/ether ${MAC} `, "m"));
        assert.match(part("addr"), /eth0\s+inet 10\.77\.0\.2\/24 /);
        assert.match(part("addr"), /eth0\s+inet 10\.99\.0\.3\/24 /);
        // the lease's router (10.77.0.1) is not the default route: the ctr gw is
        assert.deepEqual(part("route").match(/^default .*$/gm)?.map((l) => l.trim()), [
          "default via 10.99.0.1 dev eth0",
        ]);
        // ctr.dns's nameserver, not the lease's (a lease's domain may still give the search line)
        assert.deepEqual(part("resolv").match(/^nameserver .*$/gm), ["nameserver 10.99.0.53"]);
        assert.match(part("wget"), new RegExp(`peer-ok ${nonce} /ctr`));
      },
    )
  ));

Deno.test("run: a ctr.network without a NIC (TSI / private passt) is refused, naming it", () =>
  withBundle(
    { [`${P}ctr.network.3`]: "vmmac=52:54:00:c7:00:09,addr=10.99.0.3/24" },
    "exit 0",
    async (bundle, id) => {
      const r = await nerdbox(["run", "--name", id, "--backend", "qemu", "--bundle", bundle]);
      assert.equal(r.code, 125, r.stderr);
      assert.match(
        r.stderr,
        /io\.containerd\.nerdbox\.ctr\.network\.3: vmmac="52:54:00:c7:00:09": matches no VM network/,
      );
    },
  ));
