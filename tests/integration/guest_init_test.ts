/**
 * guest/main.ts end to end on the host, for real: dev mode (`--channel` unix socket) inside a
 * named netns and a private mount/UTS namespace, with a busybox ext4 rootfs on a loop device,
 * veth NICs found by MAC, and a test-side channel peer. Checks both sides: the frames the host
 * gets, and what the workload sees from inside (addresses, routes, /etc files, tty, signals).
 */
import assert from "node:assert/strict";
import {
  addVeth,
  encodeFrame,
  encodeJsonFrame,
  inNetns,
  type LoopRootfs,
  makeNetns,
  run,
  runGuest,
  withLoopRootfs,
} from "../helpers/guest_env.ts";
import {
  GUEST_EXIT,
  type GuestConfig,
  type GuestError,
  type GuestNetworkReport,
  type GuestProcess,
  MsgType,
} from "../../lib/guest_protocol.ts";
import { zombieChildren } from "../../guest/reaper.ts";

const MAC = "52:54:00:9a:00:01";
const MAC2 = "52:54:00:9a:00:02";

function proc(args: string[], extra: Partial<GuestProcess> = {}): GuestProcess {
  return { args, env: ["PATH=/bin"], cwd: "/", uid: 0, gid: 0, terminal: false, ...extra };
}

function config(
  rootfs: LoopRootfs,
  p: GuestProcess,
  extra: Partial<GuestConfig> = {},
): GuestConfig {
  return {
    version: 1,
    hostname: "gi-box.example",
    rootfs: { kind: "block", device: rootfs.device, fstype: "ext4" },
    process: p,
    networks: [{ mac: MAC, dhcp: false, addrs: ["10.88.0.2/24"], defaultRoute: true }],
    dhcpTimeoutMs: 2000,
    ...extra,
  };
}

/** Runs `fn` with a fresh netns holding a veth pair (MAC on gi0) and a loop rootfs. */
async function withEnv(
  name: string,
  fn: (ns: string, rootfs: LoopRootfs) => Promise<void>,
): Promise<void> {
  await withLoopRootfs("guest-init-env-", async (rootfs) => {
    const ns = await makeNetns(`gi-${name}`);
    try {
      await addVeth(ns.name, "gi0", MAC, "gi1");
      await fn(ns.name, rootfs);
    } finally {
      await ns.remove();
    }
  });
}

Deno.test("guest init: static network, overlay rootfs, /etc files, output and exit status", async () => {
  await withEnv("static", async (ns, rootfs) => {
    const r = await runGuest({
      prefix: inNetns(ns),
      config: config(
        rootfs,
        proc([
          "sh",
          "-c",
          "echo hi; ip -o -4 addr show dev gi0; ip route; cat /etc/resolv.conf /etc/hosts; hostname; pwd; " +
          "touch /written && echo wrote; echo err >&2; exit 3",
        ], { cwd: "/work" }),
        { dns: { nameservers: ["192.0.2.53"], search: ["example"], options: ["ndots:2"] } },
      ),
    });
    assert.equal(r.code, 3, r.stderr);
    assert.deepEqual(r.json(MsgType.EXIT), { code: 3 });
    assert.deepEqual(r.frames.slice(0, 3).map((f) => f.type), [
      MsgType.HELLO,
      MsgType.NETWORK,
      MsgType.STARTED,
    ]);
    const out = r.stdoutOf();
    assert.match(out, /^hi\n/);
    assert.match(out, /inet 10\.88\.0\.2\/24 brd 10\.88\.0\.255 scope global gi0/);
    assert.match(out, /default via 10\.88\.0\.1 dev gi0/);
    assert.match(out, /search example\nnameserver 192\.0\.2\.53\noptions ndots:2/);
    assert.match(out, /10\.88\.0\.2\tgi-box\.example gi-box/);
    assert.match(out, /\ngi-box\.example\n\/work\nwrote\n/);
    const err = r.frames.filter((f) => f.type === MsgType.STDERR).map((f) =>
      new TextDecoder().decode(f.payload)
    );
    assert.equal(err.join(""), "err\n");
    const user = await runGuest({
      prefix: inNetns(ns),
      config: config(
        rootfs,
        proc(["sh", "-c", "id -u; id -g; touch /tmp/mine && echo tmp-ok"], {
          uid: 1234,
          gid: 4321,
        }),
      ),
    });
    assert.equal(user.code, 0, user.stderr);
    assert.equal(user.stdoutOf(), "1234\n4321\ntmp-ok\n");
    const report = r.json<GuestNetworkReport>(MsgType.NETWORK)!;
    assert.deepEqual(report, {
      interfaces: [{ name: "gi0", mac: MAC, addrs: ["10.88.0.2/24"], mtu: 1500 }],
      defaultGateway: "10.88.0.1",
      nameservers: ["192.0.2.53"],
    });
  });
});

Deno.test("guest init: two networks, only the first carries the default route; MTU, IPv6, flags", async () => {
  await withEnv("two", async (ns, rootfs) => {
    await addVeth(ns, "gj0", MAC2, "gj1");
    const r = await runGuest({
      prefix: inNetns(ns),
      config: config(rootfs, proc(["true"]), {
        networks: [
          {
            mac: MAC2,
            dhcp: false,
            addrs: ["10.99.0.5/16", "fd00:99::5/64"],
            defaultRoute: true,
            gateway4: "10.99.0.254",
            mtu: 1400,
          },
          { mac: MAC, dhcp: false, addrs: ["10.88.0.2/24"], defaultRoute: true },
        ],
      }),
    });
    assert.equal(r.code, 0, r.stderr);
    const routes = JSON.parse(await run("ip", ["-j", "-n", ns, "-4", "route", "show", "default"]));
    assert.deepEqual(routes.map((x: { gateway: string; dev: string }) => [x.gateway, x.dev]), [[
      "10.99.0.254",
      "gj0",
    ]]);
    const links = JSON.parse(await run("ip", ["-j", "-n", ns, "addr", "show"]));
    const gj0 = links.find((l: { ifname: string }) => l.ifname === "gj0");
    assert.equal(gj0.mtu, 1400);
    assert.ok(gj0.flags.includes("UP"));
    const lo = links.find((l: { ifname: string }) => l.ifname === "lo");
    assert.ok(lo.flags.includes("UP"));
    const v6 = gj0.addr_info.find((a: { local: string }) => a.local === "fd00:99::5");
    assert.equal(v6.prefixlen, 64);
    assert.equal(v6.nodad, true);
    assert.equal(v6.valid_life_time, 4294967295); // permanent
    const v4 = gj0.addr_info.find((a: { local: string }) => a.local === "10.99.0.5");
    assert.equal(v4.prefixlen, 16);
    const report = r.json<GuestNetworkReport>(MsgType.NETWORK)!;
    assert.equal(report.defaultGateway, "10.99.0.254");
    assert.deepEqual(report.interfaces.map((i) => [i.name, i.mtu]), [["gj0", 1400], ["gi0", 1500]]);
  });
});

Deno.test("guest init: ctr networks rename and re-MAC their NICs (up ones too), names passing between them", async () => {
  await withEnv("ctr", async (ns, rootfs) => {
    await addVeth(ns, "gj0", MAC2, "gj1");
    // gi0 already up: it must be set down for the rename; the peers up: carrier on.
    for (const l of ["gi0", "gi1", "gj1"]) await run("ip", ["-n", ns, "link", "set", l, "up"]);
    const newMac = "02:aa:bb:cc:dd:01";
    const r = await runGuest({
      prefix: inNetns(ns),
      config: config(rootfs, proc(["true"]), {
        networks: [
          {
            mac: MAC,
            dhcp: false,
            addrs: ["10.88.0.2/24", "10.99.0.3/24"],
            defaultRoute: true,
            gateway4: "10.99.0.1",
            ifname: "gj0", // the other NIC's name, which it gives up
            setMac: newMac,
          },
          {
            mac: MAC2,
            dhcp: false,
            addrs: ["fd00:99::5/64"],
            defaultRoute: false,
            ifname: "ctr%d",
            gateway6: "fd00:99::1",
          },
        ],
      }),
    });
    assert.equal(r.code, 0, r.stderr);
    const links = JSON.parse(await run("ip", ["-j", "-n", ns, "addr", "show"]));
    const byName = (n: string) => links.find((l: { ifname: string }) => l.ifname === n);
    assert.equal(byName("gi0"), undefined);
    assert.equal(byName("gj0").address, newMac);
    assert.ok(byName("gj0").flags.includes("UP"));
    assert.deepEqual(
      byName("gj0").addr_info.filter((a: { family: string }) => a.family === "inet")
        .map((a: { local: string }) => a.local),
      ["10.88.0.2", "10.99.0.3"],
    );
    assert.equal(byName("ctr0").address, MAC2);
    assert.ok(byName("ctr0").addr_info.some((a: { local: string }) => a.local === "fd00:99::5"));
    const r4 = JSON.parse(await run("ip", ["-j", "-n", ns, "-4", "route", "show", "default"]));
    assert.deepEqual(r4.map((x: { gateway: string; dev: string }) => [x.gateway, x.dev]), [[
      "10.99.0.1",
      "gj0",
    ]]);
    const r6 = JSON.parse(await run("ip", ["-j", "-n", ns, "-6", "route", "show", "default"]));
    assert.deepEqual(r6.map((x: { gateway: string; dev: string }) => [x.gateway, x.dev]), [[
      "fd00:99::1",
      "ctr0",
    ]]);
    const report = r.json<GuestNetworkReport>(MsgType.NETWORK)!;
    assert.deepEqual(report.interfaces.map((i) => [i.name, i.mac]), [
      ["gj0", newMac],
      ["ctr0", MAC2],
    ]);
    assert.equal(report.defaultGateway, "10.99.0.1");
  });
});

Deno.test("guest init: exit codes 0 and 1, signals 9 and 15 via SIGNAL frames, init's SIGTERM forwarded", async () => {
  await withEnv("sig", async (ns, rootfs) => {
    const plain = async (
      args: string[],
    ) => (await runGuest({ prefix: inNetns(ns), config: config(rootfs, proc(args)) }));
    const ok = await plain(["true"]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.deepEqual(ok.json(MsgType.EXIT), { code: 0 });
    const one = await plain(["false"]);
    assert.equal(one.code, 1);
    assert.deepEqual(one.json(MsgType.EXIT), { code: 1 });
    for (const signo of [9, 15]) {
      const r = await runGuest({
        prefix: inNetns(ns),
        config: config(rootfs, proc(["sleep", "30"])),
        onFrame: async (f, send) => {
          if (f.type === MsgType.STARTED && f.proc === 0) {
            await send(encodeJsonFrame(MsgType.SIGNAL, 0, { signo }));
          }
        },
      });
      assert.equal(r.code, 128 + signo, r.stderr);
      assert.deepEqual(r.json(MsgType.EXIT), { code: 128 + signo });
    }
    const fwd = await runGuest({
      prefix: inNetns(ns),
      config: config(rootfs, proc(["sleep", "30"])),
      onFrame: (f, _send, pid) => {
        if (f.type === MsgType.STARTED) Deno.kill(pid, "SIGTERM"); // ip netns exec/unshare exec: pid is init's
      },
    });
    assert.deepEqual(fwd.json(MsgType.EXIT), { code: 143 });
    assert.equal(fwd.code, 143);
  });
});

Deno.test("guest init: stdin, terminal mode, EXEC frames, zombie reaping", async () => {
  await withEnv("io", async (ns, rootfs) => {
    const cat = await runGuest({
      prefix: inNetns(ns),
      config: config(rootfs, proc(["cat"])),
      onFrame: async (f, send) => {
        if (f.type === MsgType.STARTED) {
          await send(encodeFrame(MsgType.STDIN, 0, new TextEncoder().encode("hello stdin\n")));
          await send(encodeFrame(MsgType.STDIN_EOF, 0, new Uint8Array(0)));
        }
      },
    });
    assert.equal(cat.code, 0, cat.stderr);
    assert.equal(cat.stdoutOf(), "hello stdin\n");

    const tty = await runGuest({
      prefix: inNetns(ns),
      config: config(
        rootfs,
        proc(["sh", "-c", "test -t 0 && test -t 1 && echo is-a-tty; tty"], { terminal: true }),
      ),
    });
    assert.equal(tty.code, 0, tty.stderr);
    assert.match(tty.stdoutOf(), /is-a-tty\r?\n\/dev\/pts\/\d+/);

    let zombiesSeen: number[] | undefined;
    const ex = await runGuest({
      prefix: inNetns(ns),
      // The inner sh exits at once, orphaning a short sleep that re-parents to init.
      config: config(rootfs, proc(["sh", "-c", "sh -c 'sleep 0.2 &'; read line; echo got $line"])),
      onFrame: async (f, send, pid) => {
        if (f.type === MsgType.STARTED && f.proc === 0) {
          await send(encodeJsonFrame(MsgType.EXEC, 7, proc(["sh", "-c", "echo exec-ok; exit 4"])));
          await send(encodeJsonFrame(MsgType.EXEC, 8, proc(["no-such-program"])));
          await send(
            encodeJsonFrame(
              MsgType.EXEC,
              9,
              proc(["sh", "-c", "test -t 1 && echo exec-tty"], { terminal: true }),
            ),
          );
        }
        if (f.type === MsgType.EXIT && f.proc === 9) {
          await new Promise((r) => setTimeout(r, 1500));
          zombiesSeen = zombieChildren(pid);
          await send(encodeFrame(MsgType.STDIN, 0, new TextEncoder().encode("done\n")));
        }
      },
    });
    assert.equal(ex.code, 0, ex.stderr);
    assert.equal(ex.stdoutOf(0), "got done\n");
    assert.equal(ex.stdoutOf(7), "exec-ok\n");
    assert.deepEqual(ex.json(MsgType.EXIT, 7), { code: 4 });
    assert.ok(ex.json<{ pid: number }>(MsgType.STARTED, 7)!.pid > 0);
    assert.equal(ex.json<GuestError>(MsgType.ERROR, 8)?.kind, "exec");
    assert.deepEqual(ex.json(MsgType.EXIT, 8), { code: 127 });
    assert.equal(ex.stdoutOf(9), "exec-tty\r\n", "terminal EXEC after chroot");
    assert.deepEqual(ex.json(MsgType.EXIT, 9), { code: 0 });
    assert.deepEqual(zombiesSeen, []);
  });
});

Deno.test("guest init: setup failures are distinct errors (config, exec 127/126, mac_not_found)", async () => {
  await withEnv("fail", async (ns, rootfs) => {
    const missing = await runGuest({
      prefix: inNetns(ns),
      config: config(rootfs, proc(["/bin/nope"])),
    });
    assert.equal(missing.code, 127);
    assert.equal(missing.json<GuestError>(MsgType.ERROR)?.kind, "exec");
    assert.match(missing.stderr, /ERROR exec: exec: "\/bin\/nope": no such file/);

    const noexec = await runGuest({
      prefix: inNetns(ns),
      config: config(rootfs, proc(["/bin/noexec"])),
    });
    assert.equal(noexec.code, 126);
    assert.deepEqual(noexec.json<GuestError>(MsgType.ERROR), {
      kind: "exec",
      message: 'exec: "/bin/noexec": permission denied',
      code: 126,
    });

    const nomac = await runGuest({
      prefix: inNetns(ns),
      config: config(rootfs, proc(["true"]), {
        networks: [{
          mac: "52:54:00:00:00:ee",
          dhcp: false,
          addrs: ["10.1.0.2/24"],
          defaultRoute: true,
        }],
      }),
    });
    assert.equal(nomac.code, GUEST_EXIT.mac_not_found);
    const e = nomac.json<GuestError>(MsgType.ERROR)!;
    assert.equal(e.kind, "mac_not_found");
    assert.match(e.message, /52:54:00:00:00:ee/);
    assert.match(nomac.stderr, /ERROR mac_not_found/);
    assert.equal(nomac.json(MsgType.STARTED), undefined);

    const bad = await runGuest({
      prefix: inNetns(ns),
      config: { ...config(rootfs, proc(["true"])), dhcpTimeoutMs: -5 },
    });
    assert.equal(bad.code, GUEST_EXIT.config);
    assert.match(
      bad.json<GuestError>(MsgType.ERROR)!.message,
      /GuestConfig\.dhcpTimeoutMs = -5: expected an integer/,
    );

    const badRoot = await runGuest({
      prefix: inNetns(ns),
      config: {
        ...config(rootfs, proc(["true"])),
        rootfs: { kind: "block", device: "/dev/gi-missing", fstype: "ext4" },
      },
    });
    assert.equal(badRoot.code, GUEST_EXIT.rootfs);
    assert.match(badRoot.json<GuestError>(MsgType.ERROR)!.message, /\/dev\/gi-missing/);
  });
});

Deno.test("guest init: dev mode --config FILE needs no CONFIG frame", async () => {
  await withEnv("cfgfile", async (ns, rootfs) => {
    const r = await runGuest({
      prefix: inNetns(ns),
      configFile: true,
      config: config(rootfs, proc(["sh", "-c", "hostname; exit 9"])),
    });
    assert.equal(r.code, 9, r.stderr);
    assert.equal(r.stdoutOf(), "gi-box.example\n");
  });
});

Deno.test("guest init: as PID 1 (own pid namespace) reaps, reports EXIT and powers off", async () => {
  await withEnv("pid1", async (ns, rootfs) => {
    const r = await runGuest({
      prefix: ["ip", "netns", "exec", ns, "unshare", "-m", "-u", "-p", "-f", "--mount-proc"],
      config: config(rootfs, proc(["sh", "-c", "echo pid $$; exit 5"])),
    });
    assert.deepEqual(r.json(MsgType.EXIT), { code: 5 }, r.stderr);
    assert.match(r.stdoutOf(), /^pid \d+\n$/);
    // reboot(2) POWER_OFF in a pid namespace kills its init with SIGINT: no Deno.exit() ran.
    assert.equal(r.code, 128 + 2, r.stderr);
  });
});

/**
 * Drives an interactive `sh` on the guest's pty: sends each step's input once the previous
 * step's marker (computed by the shell, so never the echoed command line) has appeared.
 */
function terminalScript(
  steps: Array<{ waitFor: RegExp; send: Uint8Array | object; delayMs?: number }>,
) {
  let out = "";
  let next = 0;
  return {
    text: () => out,
    onFrame: async (
      f: { type: number; proc: number; payload: Uint8Array },
      send: (b: Uint8Array) => Promise<void>,
    ) => {
      if (f.type !== MsgType.STDOUT && f.type !== MsgType.STARTED) return;
      if (f.type === MsgType.STDOUT) out += new TextDecoder().decode(f.payload);
      while (next < steps.length && steps[next].waitFor.test(out)) {
        const { send: s, delayMs } = steps[next++];
        if (delayMs) await new Promise((r) => setTimeout(r, delayMs));
        await send(
          s instanceof Uint8Array
            ? encodeFrame(MsgType.STDIN, 0, s)
            : encodeJsonFrame(MsgType.RESIZE, 0, s),
        );
      }
    },
  };
}

Deno.test("guest init: terminal mode has a controlling tty (session, job control, ^C, resize)", async () => {
  await withEnv("ctty", async (ns, rootfs) => {
    const line = (s: string) => new TextEncoder().encode(`${s}\n`);
    const script = terminalScript([
      // stat fields: 6 session, 7 tty_nr, 8 tpgid; $$ is the shell (the workload).
      { waitFor: /\$ /, send: line("set -- $(cat /proc/$$/stat); echo S$6:P$$:T$7:G$8:E") },
      { waitFor: /S\d+:P\d+:T\d+:G-?\d+:E/, send: line("sleep 30") },
      // ^C typed into the pty once sleep runs in the foreground
      { waitFor: /sleep 30\r?\n/, send: Uint8Array.of(3), delayMs: 1500 },
      { waitFor: /\^C/, send: line("echo rc=$?=R") },
      { waitFor: /rc=\d+=R/, send: { cols: 123, rows: 45 } },
      { waitFor: /rc=\d+=R/, send: line("echo size=$(stty size)=") },
      { waitFor: /size=\d+ \d+=/, send: line("exit 7") },
    ]);
    const r = await runGuest({
      prefix: inNetns(ns),
      config: config(rootfs, proc(["sh"], { terminal: true, env: ["PATH=/bin", "PS1=$ "] })),
      onFrame: script.onFrame,
      timeoutMs: 60_000,
    });
    const out = script.text();
    assert.equal(r.code, 7, `${r.stderr}\n${out}`);
    assert.doesNotMatch(out, /can't access tty|job control turned off/);
    const [, sid, pid, ttyNr, tpgid] = /S(\d+):P(\d+):T(\d+):G(-?\d+):E/.exec(out)!;
    assert.equal(sid, pid, "the workload leads its own session");
    assert.notEqual(ttyNr, "0", "the workload has a controlling terminal");
    assert.ok(Number(tpgid) > 0, "the tty has a foreground process group");
    assert.match(out, /rc=130=R/, `^C interrupted sleep (SIGINT → 128+2):\n${out}`);
    assert.match(out, /size=45 123=/);
  });
});
