/**
 * libkrun e2e, TSI (inside L1): outbound to a server on L1's loopback, `-p` port maps, the
 * exposure policy (a guest listener nobody published is not reachable from the host; with
 * `io.containerd.nerdbox.publish=all` it is), and what UDP does.
 */
import assert from "node:assert/strict";
import { libkrunTest } from "../../helpers/kvm_guests.ts";
import { httpGet, krun, listeningPorts, pollHttp, spawnKrun, waitFor, withRootfs } from "./krun.ts";

libkrunTest(
  "libkrun TSI: the guest reaches a server on the host's loopback",
  () =>
    withRootfs("out", async (rootfs, id) => {
      const seen: string[] = [];
      const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, (req) => {
        seen.push(new URL(req.url).pathname);
        return new Response(`host-ok ${id}\n`, { headers: { connection: "close" } });
      });
      try {
        const port = server.addr.port;
        const r = await krun(id, [
          rootfs,
          "--",
          "/bin/sh",
          "-c",
          `wget -q -O - http://127.0.0.1:${port}/from-guest`,
        ]);
        assert.equal(r.code, 0, r.stderr);
        assert.equal(r.stdout, `host-ok ${id}\n`);
        assert.deepEqual(seen, ["/from-guest"]);
      } finally {
        await server.shutdown();
      }
    }),
);

/** Starts a guest serving /www on each port, then waits until the guest says so. */
async function serving(
  id: string,
  rootfs: string,
  ports: number[],
  flags: string[],
): Promise<{ child: Deno.ChildProcess; stop: () => Promise<string> }> {
  const httpds = ports.map((p) => `httpd -p ${p} -h /www`).join("; ");
  const child = spawnKrun(id, [
    ...flags,
    rootfs,
    "--",
    "/bin/sh",
    "-c",
    `${httpds}; echo listening; netstat -ltn; while :; do sleep 1; done`,
  ]);
  const out = waitFor(child.stdout, /listening/);
  const err = waitFor(child.stderr, /$^/);
  await out.matched;
  return {
    child,
    stop: async () => {
      child.kill("SIGTERM");
      await child.status;
      await out.done;
      await err.done;
      return out.text() + err.text();
    },
  };
}

libkrunTest(
  "libkrun TSI policy: -p 18080:80 publishes guest port 80 as 18080 and nothing else",
  () =>
    withRootfs("pmap", async (rootfs, id) => {
      const vm = await serving(id, rootfs, [80, 9090], ["-p", "18080:80"]);
      let log = "";
      try {
        assert.equal(await pollHttp("http://127.0.0.1:18080/", 60_000), `guest-page ${id}\n`);
        // Give the unpublished listener every chance to appear on the host.
        await new Promise((r) => setTimeout(r, 3000));
        const ports = await listeningPorts();
        assert.ok(ports.includes(18080));
        assert.ok(!ports.includes(9090), `guest port 9090 is not published: ${ports}`);
        assert.ok(!ports.includes(80), `guest port 80 is published only as 18080: ${ports}`);
        assert.equal(await httpGet("http://127.0.0.1:9090/"), undefined);
      } finally {
        log = await vm.stop();
      }
      // What the guest saw (its listen on an unpublished port is refused by the host's bind).
      console.log(`guest output:\n${log}`);
    }),
);

libkrunTest(
  "libkrun TSI policy: without -p no guest listener is reachable from the host",
  () =>
    withRootfs("nopub", async (rootfs, id) => {
      const vm = await serving(id, rootfs, [9091], []);
      let log = "";
      try {
        await new Promise((r) => setTimeout(r, 5000));
        const ports = await listeningPorts();
        assert.ok(!ports.includes(9091), `guest port 9091 is not published: ${ports}`);
        assert.equal(await httpGet("http://127.0.0.1:9091/"), undefined);
      } finally {
        log = await vm.stop();
      }
      console.log(`guest output:\n${log}`);
    }),
);

libkrunTest(
  "libkrun TSI policy: publish=all (annotation) publishes every guest listener 1:1",
  () =>
    withRootfs("all", async (rootfs, id) => {
      const bundle = `${rootfs.replace(/\/rootfs$/, "")}/bundle`;
      await Deno.mkdir(bundle);
      await Deno.rename(rootfs, `${bundle}/rootfs`);
      await Deno.writeTextFile(
        `${bundle}/config.json`,
        JSON.stringify({
          ociVersion: "1.0.2",
          process: {
            args: [
              "/bin/sh",
              "-c",
              "httpd -p 9092 -h /www; echo listening; while :; do sleep 1; done",
            ],
            cwd: "/",
            env: ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"],
            user: { uid: 0, gid: 0 },
          },
          root: { path: "rootfs" },
          annotations: { "io.containerd.nerdbox.publish": "all" },
        }),
      );
      const child = spawnKrun(id, ["--bundle", bundle]);
      const out = waitFor(child.stdout, /listening/);
      const err = waitFor(child.stderr, /$^/);
      try {
        await out.matched;
        assert.equal(await pollHttp("http://127.0.0.1:9092/", 60_000), `guest-page ${id}\n`);
      } finally {
        child.kill("SIGTERM");
        await child.status;
        await out.done;
        await err.done;
        await Deno.rename(`${bundle}/rootfs`, rootfs);
      }
    }),
);

libkrunTest(
  "libkrun TSI UDP: -p …/udp is refused; a guest UDP socket reaches a host one",
  () =>
    withRootfs("udp", async (rootfs, id) => {
      const refused = await krun(id, ["-p", "5353:53/udp", rootfs, "--", "/bin/true"]);
      assert.equal(refused.code, 125);
      assert.match(refused.stderr, /--publish.*TCP only/);
      // Outbound UDP: the guest's datagram (syslogd -R) arrives at a host socket on loopback.
      const port = 20000 + Math.floor(Math.random() * 20000);
      const recv = new Deno.Command("socat", {
        args: ["-u", `UDP-RECV:${port},bind=127.0.0.1`, "STDOUT"],
        stdout: "piped",
        stderr: "null",
      }).spawn();
      const got = waitFor(recv.stdout, /udp-from-guest/, 60_000);
      try {
        const r = await krun(id, [
          rootfs,
          "--",
          "/bin/sh",
          "-c",
          `syslogd -n -R 127.0.0.1:${port} & sleep 1; logger udp-from-guest; sleep 2; echo sent`,
        ]);
        assert.equal(r.code, 0, r.stderr);
        assert.match(await got.matched, /udp-from-guest/);
      } finally {
        recv.kill("SIGTERM");
        await recv.status;
        await got.done;
      }
    }),
);
