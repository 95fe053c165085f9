/**
 * lib/vm/libkrun_calls.ts against the real libkrun: a plan's call list applied to a real context, and a
 * bad combination (a port map after a NIC) caught by libkrun and reported per call.
 */
import assert from "node:assert/strict";
import { KrunError } from "../../ffi/libkrun_errors.ts";
import { loadLibkrun } from "../../lib/vm/libkrun_locate.ts";
import { closeFd, unixSocketPair } from "../../lib/vm/libkrun.ts";
import { applyCalls, type KrunCall, libkrunCalls } from "../../lib/vm/libkrun_calls.ts";
import { parseMac } from "../../lib/spec/mac.ts";
import { checkSocketPath } from "../../lib/spec/socket_path.ts";
import type { VmPlan } from "../../lib/vm/types.ts";

const GUEST = {
  rootDir: "/nonexistent/nb-apply/root",
  path: "/opt/nerdbox/deno",
  args: ["run", "/opt/nerdbox/guest/main.ts"],
  env: ["PATH=/bin"],
};

function plan(network: VmPlan["network"]): VmPlan {
  return {
    id: "nb-apply",
    backend: "libkrun",
    cpus: 2,
    memoryMiB: 256,
    rootfs: "/nonexistent/nb-apply/rootfs",
    process: { args: ["/bin/true"], env: [], cwd: "/", uid: 0, gid: 0, terminal: false },
    hostname: "nb-apply",
    network,
    stateDir: "/nonexistent/nb-apply/state",
  };
}

Deno.test("a plan's calls apply to a real context; the channel fd is a real socket", () => {
  const lib = loadLibkrun();
  const ctx = lib.createCtx();
  const [fd, peer] = unixSocketPair();
  try {
    const calls = libkrunCalls(
      plan({
        kind: "nics",
        nics: [{
          name: "eth0",
          socket: checkSocketPath("/nonexistent/nb-apply/a.sock", "unixstream"),
          mode: "unixstream",
          mac: parseMac("02:00:00:00:00:0a"),
          features: 0x4C83,
          vfkit: false,
          vnetHdr: false,
          dhcp: true,
          addrs: [],
          defaultRoute: true,
        }],
      }),
      {
        ctx,
        guest: GUEST,
        channelFd: fd,
        consoleLog: "/nonexistent/nb-apply/c.log",
        vnetHdr: false,
      },
    );
    const { results, error } = applyCalls(lib, calls);
    assert.equal(error, undefined);
    assert.ok(results.every((r) => r.result === 0), JSON.stringify(results));
    assert.deepEqual(calls.find((c) => c.call === "krun_add_net_unixstream")?.args, [
      ctx,
      "/nonexistent/nb-apply/a.sock",
      -1,
      "02:00:00:00:00:0a",
      0x4C83,
      0,
    ]);
  } finally {
    lib.freeCtx(ctx);
    closeFd(fd);
    closeFd(peer);
  }
});

Deno.test("a port map after a NIC is caught by libkrun; later calls are not made", () => {
  const lib = loadLibkrun();
  const ctx = lib.createCtx();
  try {
    const calls: KrunCall[] = [
      {
        call: "krun_add_net_unixstream",
        args: [
          ctx,
          checkSocketPath("/nonexistent/x.sock", "unixstream"),
          -1,
          parseMac("02:00:00:00:00:0b"),
          0,
          0,
        ],
      },
      { call: "krun_set_port_map", args: [ctx, ["8080:80"]] },
      { call: "krun_set_vm_config", args: [ctx, 1, 256] },
    ];
    const { results, error } = applyCalls(lib, calls);
    assert.deepEqual(results.map((r) => r.result), [0, -22, "not called: an earlier call failed"]);
    assert.ok(error instanceof KrunError);
    assert.equal(error.call, "krun_set_port_map");
    assert.match(error.message, /port_map=\["8080:80"\]\) failed: EINVAL \(-22\)/);
  } finally {
    lib.freeCtx(ctx);
  }
});

Deno.test("vnet_hdr without support is refused while building the call list", () => {
  assert.throws(
    () =>
      libkrunCalls(
        plan({
          kind: "nics",
          nics: [{
            name: "eth0",
            socket: checkSocketPath("/x.sock", "unixstream"),
            mode: "unixstream",
            mac: parseMac("02:00:00:00:00:0c"),
            features: 0,
            vfkit: false,
            vnetHdr: true,
            dhcp: true,
            addrs: [],
            defaultRoute: true,
          }],
        }),
        { ctx: 0, guest: GUEST, channelFd: 3, consoleLog: "/x.log", vnetHdr: false },
      ),
    /vnet_hdr.*NET_FLAG_INCLUDE_VNET_HEADER/,
  );
});
