/**
 * Network providers the QEMU backend starts or talks to, against the real programs: passt in a
 * private netns (refusal without a default route, published ports bound, clean stop), libgvproxy
 * (socket, ARP answer, destroy), and the vfkit `VFKT` handshake over a real datagram socket.
 */
import { deepEqual, equal, match, ok, rejects, throws } from "node:assert/strict";
import { passtArgs, passtPortSpec, startPasst } from "../../lib/net/passt.ts";
import { GVPROXY_DEFAULTS, gvproxyJson, startGvproxy } from "../../lib/net/gvproxy.ts";
import { sendVfkitHandshake, UnixDgram } from "../../ffi/unix_dgram.ts";
import { makeTestNetns } from "../helpers/netns.ts";
import { validateNetnsPath } from "../../lib/net/netns.ts";
import { arpOverStream } from "../helpers/providers.ts";

async function tempDir(): Promise<string> {
  const d = await Deno.makeTempDir({ prefix: "nbxq-prov-" });
  await Deno.chmod(d, 0o755); // passt (as nobody) must reach its socket dir
  return d;
}

async function gone(path: string): Promise<boolean> {
  return await Deno.lstat(path).then(() => false, () => true);
}

Deno.test("passt port specs and argv", () => {
  equal(passtPortSpec({ hostPort: 8080, guestPort: 80, protocol: "tcp" }), "8080:80");
  equal(
    passtPortSpec({ hostIp: "127.0.0.1", hostPort: 8080, guestPort: 80, protocol: "tcp" }),
    "127.0.0.1/8080:80",
  );
  throws(() => passtPortSpec({ hostPort: 0, guestPort: 80, protocol: "tcp" }), /hostPort=0/);
  throws(
    () => passtPortSpec({ hostIp: "1.2.3.4,5", hostPort: 1, guestPort: 1, protocol: "tcp" }),
    /hostIp="1.2.3.4,5": expected an IP address/,
  );
  deepEqual(
    passtArgs("/s/p.sock", {
      noDhcp: true,
      ports: [{ hostPort: 53, guestPort: 5353, protocol: "udp" }],
    }),
    ["-f", "-q", "-4", "-1", "-s", "/s/p.sock", "--no-dhcp", "-u", "53:5353"],
  );
});

Deno.test("passt refuses a netns without a default route, clearly, leaving nothing", async () => {
  const ns = await makeTestNetns("nbxqp", { defaultRoute: false });
  const dir = await tempDir();
  try {
    await rejects(
      startPasst({ dir: `${dir}/p`, netns: ns.path }),
      /needs an interface with a default route in netns .*No external routable interface/s,
    );
    ok(await gone(`${dir}/p/passt.sock`));
    await Deno.writeTextFile(`${dir}/notns`, "x");
    // A path that is no netns never reaches passt: the plan's check (the one owner) refuses it.
    throws(
      () => validateNetnsPath(`${dir}/notns`, "passt netns"),
      /passt netns ".*notns": is not a namespace file/,
    );
    const ps = await ns.run("ss", ["-xlp"]);
    ok(!ps.stdout.includes("passt"), "no passt left running");
  } finally {
    await ns.delete();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("passt in a netns binds the published ports and stops cleanly", async () => {
  const ns = await makeTestNetns("nbxqp");
  const dir = await tempDir();
  try {
    const p = await startPasst({
      dir: `${dir}/p`,
      netns: ns.path,
      ports: [
        { hostIp: "127.0.0.1", hostPort: 18080, guestPort: 80, protocol: "tcp" },
        { hostPort: 18081, guestPort: 81, protocol: "udp" },
      ],
    });
    ok((await Deno.lstat(p.socket)).isSocket);
    const ss = await ns.run("ss", ["-lntuH"]);
    match(ss.stdout, /tcp\s+LISTEN.*127\.0\.0\.1:18080/);
    match(ss.stdout, /udp.*0\.0\.0\.0:18081/);
    // Not bound in the host netns.
    const host = await new Deno.Command("ss", { args: ["-lntH"], stdout: "piped" }).output();
    ok(!new TextDecoder().decode(host.stdout).includes("127.0.0.1:18080"));
    await p.stop();
    await p.exited;
    ok(await gone(p.socket));
    await p.stop(); // idempotent
  } finally {
    await ns.delete();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("libgvproxy: stream socket answers ARP for its gateway; destroy removes it", async () => {
  const dir = await tempDir();
  try {
    throws(() => gvproxyJson({ socketPath: "rel.sock" }), /expected an absolute path/);
    const g = await startGvproxy({ socketPath: `${dir}/gv.sock` });
    try {
      match(g.version, /^v\d+\.\d+\.\d+/);
      const conn = await Deno.connect({ transport: "unix", path: g.socket });
      try {
        const mac = await arpOverStream(conn, {
          mac: GVPROXY_DEFAULTS.guestMac,
          fromIp: GVPROXY_DEFAULTS.guestIp,
          targetIp: GVPROXY_DEFAULTS.gatewayIp,
        });
        equal(mac, GVPROXY_DEFAULTS.gatewayMac);
      } finally {
        conn.close();
      }
    } finally {
      await g.stop();
    }
    ok(await gone(`${dir}/gv.sock`));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("vfkit handshake: the provider gets VFKT from the path QEMU binds next", async () => {
  const dir = await tempDir();
  const peer = UnixDgram.bind(`${dir}/provider.sock`);
  try {
    sendVfkitHandshake(`${dir}/n0.sock`, peer.path);
    const got = await peer.recv();
    ok(got);
    equal(new TextDecoder().decode(got.data), "VFKT");
    equal(got.from, `${dir}/n0.sock`);
    ok(await gone(`${dir}/n0.sock`), "the local path is free for QEMU to bind");
    // The peer can answer to that path once someone (QEMU) binds it again.
    const qemuSide = UnixDgram.bind(`${dir}/n0.sock`);
    try {
      peer.sendTo(got.from, new Uint8Array([1, 2, 3]));
      deepEqual((await qemuSide.recv())?.data, new Uint8Array([1, 2, 3]));
    } finally {
      qemuSide.close();
    }
    throws(() => sendVfkitHandshake(`${dir}/n1.sock`, `${dir}/nobody.sock`), /sendto.*errno/);
  } finally {
    peer.close();
    await Deno.remove(dir, { recursive: true });
  }
});
