/**
 * The TSI exposure policy at the edge and in the plan: `io.containerd.nerdbox.publish` (none, all,
 * a list) parsed with errors naming the entry; `nerdbox run` publishes only `-p`; the libkrun
 * calls always carry a port map (empty when nothing is published) unless `all` was asked for.
 */
import assert from "node:assert/strict";
import { parsePublishValue } from "../../lib/spec/publish.ts";
import { parseAnnotations } from "../../lib/spec/annotations.ts";
import { buildSandboxSpec } from "../../lib/spec/sandbox.ts";
import { SpecValidationError } from "../../lib/spec/types.ts";
import { planVm } from "../../lib/vm/plan.ts";
import { libkrunCalls } from "../../lib/vm/libkrun_calls.ts";
import type { Backend } from "../../lib/vm/types.ts";
import { inspectAnnotations } from "../../lib/cli/inspect.ts";

const KEY = "io.containerd.nerdbox.publish";

function errorsOf(fn: () => unknown): string[] {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof SpecValidationError, String(e));
    return e.errors.map((x) => `${x.annotation}|${x.field}|${x.value}|${x.message}`);
  }
  assert.fail("expected a SpecValidationError");
}

function sandbox(annotations: Record<string, string>, publish: string[] = [], netns?: string) {
  return buildSandboxSpec({
    ...(netns ? { netns } : {}),
    id: "pub",
    rootfs: "/srv/rootfs",
    process: { args: ["/bin/true"], env: [], cwd: "/", uid: 0, gid: 0, terminal: false },
    annotations,
    publish,
  }).spec;
}

function portMapCalls(annotations: Record<string, string>, publish: string[] = [], netns?: string) {
  const plan = planVm(sandbox(annotations, publish, netns), {
    backend: "libkrun" as Backend,
    stateDir: "/run/nerdbox/pub",
  });
  const calls = libkrunCalls(plan, {
    ctx: 1,
    guest: { rootDir: "/g", path: "/init", args: [], env: [] },
    channelFd: 3,
    consoleLog: "/run/nerdbox/pub/console.log",
    vnetHdr: false,
  });
  return calls.filter((c) => c.call === "krun_set_port_map").map((c) => c.args[1]);
}

Deno.test("publish annotation: none, all, a list; bad entries name the key and the entry", () => {
  assert.deepEqual(parsePublishValue("none", KEY), { all: false, ports: [] });
  assert.deepEqual(parsePublishValue("all", KEY), { all: true, ports: [] });
  assert.deepEqual(parsePublishValue("8080:80, 127.0.0.1:53:53/udp", KEY).ports, [
    { hostPort: 8080, guestPort: 80, protocol: "tcp" },
    { hostIp: "127.0.0.1", hostPort: 53, guestPort: 53, protocol: "udp" },
  ]);
  const bad = errorsOf(() => parsePublishValue("8080:80,every,9:9/sctp", KEY));
  assert.equal(bad.length, 2);
  assert.match(bad[0], /^io\.containerd\.nerdbox\.publish\|port #1\|every\|/);
  assert.match(bad[1], /^io\.containerd\.nerdbox\.publish\|port #2\|9:9\/sctp\|.*unknown protocol/);
  assert.match(errorsOf(() => parsePublishValue("8080:80,", KEY))[0], /without empty entries/);
  assert.match(errorsOf(() => parsePublishValue("", KEY))[0], /expected none, all/);
  assert.match(
    errorsOf(() => parsePublishValue(Array(129).fill("1:1").join(","), KEY))[0],
    /at most 128/,
  );
  const parsed = parseAnnotations({ [KEY]: "Everything" });
  assert.equal(parsed.errors.length, 1);
  assert.equal(parsed.errors[0].annotation, KEY);
});

Deno.test("TSI under libkrun: no -p means an empty port map (nothing published)", () => {
  assert.deepEqual(portMapCalls({}), [[]]);
  assert.deepEqual(portMapCalls({ [KEY]: "none" }), [[]]);
  assert.deepEqual(portMapCalls({}, ["18080:80"]), [["18080:80"]]);
});

Deno.test("in a joined (pod) netns every guest listener is published unless the user says", () => {
  const pod = `/proc/${Deno.pid}/ns/net`; // a real netns: the plan checks it
  assert.deepEqual(portMapCalls({}, [], pod), []);
  assert.deepEqual(portMapCalls({ [KEY]: "none" }, [], pod), [[]]);
  assert.deepEqual(portMapCalls({}, ["8000:8000"], pod), [["8000:8000"]]);
});

Deno.test("publish list and -p are merged; all means no port map (libkrun's every-port default)", () => {
  assert.deepEqual(portMapCalls({ [KEY]: "8080:80" }, ["9090:90"]), [["8080:80", "9090:90"]]);
  assert.deepEqual(portMapCalls({ [KEY]: "all" }), []);
  assert.match(
    errorsOf(() => sandbox({ [KEY]: "all" }, ["8080:80"]))[0],
    /^--publish\|\|8080:80\|io\.containerd\.nerdbox\.publish=all already publishes/,
  );
  assert.match(
    errorsOf(() => sandbox({ [KEY]: "8080:80" }, ["8080:81"]))[0],
    /host port 8080\/tcp is already published/,
  );
});

Deno.test("publish=all under QEMU is refused naming the annotation (passt forwards listed ports)", () => {
  const errs = errorsOf(() =>
    planVm(sandbox({ [KEY]: "all" }), { backend: "qemu", stateDir: "/run/nerdbox/pub" })
  );
  assert.equal(errs.length, 1);
  assert.match(errs[0], /^io\.containerd\.nerdbox\.publish\|\|all\|.*list them/);
});

Deno.test("inspect shows what is published and where it came from", async () => {
  const none = await inspectAnnotations({}, { source: "test", probe: false });
  assert.deepEqual(none.publish, { mode: "none", ports: [], source: "default" });
  const list = await inspectAnnotations({ [KEY]: "8080:80,[::1]:53:53/udp" }, {
    source: "test",
    probe: false,
  });
  assert.deepEqual(list.publish, {
    mode: "list",
    ports: ["8080:80/tcp", "[::1]:53:53/udp"],
    source: "annotation",
  });
  const all = await inspectAnnotations({ [KEY]: "all" }, { source: "test", probe: false });
  assert.equal(all.publish.mode, "all");
});
