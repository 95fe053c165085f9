/**
 * Stats and port-forward parsing on both sides of the VM boundary: guest/cgroup_stats.ts reads
 * cgroup v2 files (here: files written by the test in the kernel's formats), guest/loopback.ts
 * reads /proc/net/tcp, lib/shim/cgroup_metrics.ts turns the counters into containerd's
 * `io.containerd.cgroups.v2.Metrics`. The real files are read in a QEMU guest by
 * tests/integration/guest_crun_test.ts.
 */
import assert from "node:assert/strict";
import { fromBinary } from "@bufbuild/protobuf";
import { OomKills, parseFlatKeyed, parseSingle } from "../../guest/cgroup_stats.ts";
import { listeningPorts } from "../../guest/loopback.ts";
import { cgroupMetrics, METRICS_V2_TYPE_URL, metricsAny } from "../../lib/shim/cgroup_metrics.ts";
import { MetricsSchema } from "../../lib/shim/proto/gen/cgroups/metrics_v2_pb.ts";

Deno.test("parseFlatKeyed / parseSingle read the kernel's formats; junk is skipped", () => {
  assert.deepEqual(parseFlatKeyed("usage_usec 1200\nuser_usec 700\n\nbad line\nx -1\n"), {
    usage_usec: 1200,
    user_usec: 700,
  });
  assert.equal(parseSingle("max\n"), "max");
  assert.equal(parseSingle("4096\n"), 4096);
  assert.equal(parseSingle("-1"), undefined);
  assert.equal(parseSingle(""), undefined);
});

Deno.test("OomKills: only a 137 with a risen oom_kill count is an OOM kill, each counted once", async () => {
  const dir = await Deno.makeTempDir({ prefix: "nb-oom-" });
  try {
    const events = (n: number) =>
      Deno.writeTextFile(`${dir}/memory.events`, `low 0\nhigh 0\nmax 3\noom 1\noom_kill ${n}\n`);
    const k = new OomKills(dir); // no file yet: counts from 0
    assert.equal(k.killed(137), false);
    await events(1);
    assert.equal(k.killed(1), false, "not a SIGKILL");
    assert.equal(k.killed(137), true);
    assert.equal(k.killed(137), false, "the same kill is not reported twice");
    await events(3);
    assert.equal(k.killed(137), true);
    assert.equal(k.killed(137), true);
    assert.equal(k.killed(137), false);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("listeningPorts: LISTEN sockets only, v4 and v6 lines, deduplicated and sorted", () => {
  const tcp = [
    "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid",
    "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0",
    "   1: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0",
    "   2: 0100007F:1F90 0100007F:A1B2 01 00000000:00000000 00:00000000 00000000     0",
    "   3: 0100007F:9C40 0100007F:1F90 06 00000000:00000000 00:00000000 00000000     0",
  ].join("\n");
  assert.deepEqual(listeningPorts(tcp), [80, 8080]);
  const tcp6 = [
    "  sl  local_address                         remote_address                        st",
    "   0: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A",
  ].join("\n");
  assert.deepEqual(listeningPorts(tcp6), [8080]);
  assert.deepEqual(listeningPorts(""), []);
});

Deno.test("cgroupMetrics maps cpu.stat, memory.*, memory.events and pids; max is 2^64-1", () => {
  const m = cgroupMetrics({
    flat: {
      "cpu.stat": { usage_usec: 1500, user_usec: 1000, system_usec: 500, nr_throttled: 2 },
      "memory.stat": { anon: 4096, file: 8192, pgfault: 10, pgmajfault: 1, inactive_file: 100 },
      "memory.events": { max: 4, oom: 1, oom_kill: 1 },
    },
    single: {
      "memory.current": 16384,
      "memory.max": "max",
      "memory.peak": 20000,
      "pids.current": 3,
      "pids.max": 100,
    },
  });
  assert.equal(m.cpu?.usageUsec, 1500n);
  assert.equal(m.cpu?.systemUsec, 500n);
  assert.equal(m.cpu?.nrThrottled, 2n);
  assert.equal(m.memory?.anon, 4096n);
  assert.equal(m.memory?.inactiveFile, 100n);
  assert.equal(m.memory?.pgmajfault, 1n);
  assert.equal(m.memory?.usage, 16384n);
  assert.equal(m.memory?.usageLimit, (1n << 64n) - 1n);
  assert.equal(m.memory?.maxUsage, 20000n);
  assert.equal(m.memory?.swapUsage, 0n, "a file the kernel lacks reads as 0");
  assert.equal(m.memoryEvents?.oomKill, 1n);
  assert.deepEqual([m.pids?.current, m.pids?.limit], [3n, 100n]);

  const none = cgroupMetrics({ flat: {}, single: {} });
  assert.equal(none.cpu, undefined, "a controller the guest did not report stays unset");
  assert.equal(none.memory, undefined);
  assert.equal(none.pids, undefined);
});

Deno.test("metricsAny: the Any containerd decodes, by the v2 Metrics type URL", () => {
  const any = metricsAny({ flat: { "cpu.stat": { usage_usec: 7 } }, single: {} });
  assert.equal(any.typeUrl, METRICS_V2_TYPE_URL);
  assert.equal(any.typeUrl, "io.containerd.cgroups.v2.Metrics");
  const back = fromBinary(MetricsSchema, any.value);
  assert.equal(back.cpu?.usageUsec, 7n);
  // Field 2 (cpu), wire type 2: the bytes containerd's Go decoder reads.
  assert.equal(any.value[0], (2 << 3) | 2);
});
