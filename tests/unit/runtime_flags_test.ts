/** The runtime command line: runsc's single-dash spellings, globals, `run` routing, signals. */
import assert from "node:assert/strict";
import {
  isRuntimeRun,
  normalizeDashes,
  parseRuntimeArgs,
  parseSignal,
} from "../../lib/cli/runtime_flags.ts";
import { RuntimeError, validateId } from "../../lib/runtime/state.ts";

Deno.test("runsc's Go-style flags read like runc's", () => {
  assert.deepEqual(normalizeDashes(["-detach", "-bundle=/b", "-d", "id"]), [
    "--detach",
    "--bundle=/b",
    "-d",
    "id",
  ]);
  assert.deepEqual(normalizeDashes(["-netns", "/x", "--", "-not", "-me"]), [
    "--netns",
    "/x",
    "--",
    "-not",
    "-me",
  ]);
  const a = parseRuntimeArgs(["-root", "/r", "run", "-detach", "-bundle", "/b", "x1"]);
  assert.equal(a.global.root, "/r");
  assert.equal(a.verb, "run");
  assert.equal(a.flags.detach, true);
  assert.equal(a.flags.bundle, "/b");
  assert.deepEqual(a.positionals, ["x1"]);
});

Deno.test("runc's globals as podman and containerd pass them", () => {
  const a = parseRuntimeArgs([
    "--systemd-cgroup",
    "--log",
    "/l",
    "--log-format",
    "json",
    "--root",
    "/run/x",
    "create",
    "--bundle",
    "/b",
    "--pid-file",
    "/p",
    "--console-socket",
    "/s",
    "--no-pivot",
    "c1",
  ]);
  assert.equal(a.global.systemdCgroup, true);
  assert.equal(a.global.log, "/l");
  assert.equal(a.global.logFormat, "json");
  assert.equal(a.verb, "create");
  assert.equal(a.flags["pid-file"], "/p");
  assert.equal(a.flags["console-socket"], "/s");
  assert.equal(parseRuntimeArgs(["state", "c1"]).global.root, "/run/nerdbox/runtime");
  assert.throws(() => parseRuntimeArgs(["--log-format", "xml", "state", "c"]), /xml.*text or json/);
  assert.throws(() => parseRuntimeArgs(["create", "--bogus", "c"]), RuntimeError);
});

Deno.test("exec: the command after -- or after the id, its dashes untouched", () => {
  const a = parseRuntimeArgs(["exec", "c1", "--", "ls", "-la"]);
  assert.deepEqual(a.command, ["ls", "-la"]);
  const b = parseRuntimeArgs(["exec", "-e", "A=1", "c1", "ls", "-la"]);
  assert.deepEqual(b.positionals, ["c1"]);
  assert.deepEqual(b.command, ["ls", "-la"]);
  assert.deepEqual(b.flags.env, ["A=1"]);
});

Deno.test("`nerdbox run` routing: the runtime verb vs the boot-a-rootfs command", () => {
  assert.equal(isRuntimeRun(["-detach", "id"]), true);
  assert.equal(isRuntimeRun(["id"]), true);
  assert.equal(isRuntimeRun(["--bundle", "/b", "id"]), true);
  assert.equal(isRuntimeRun(["-d", "--bundle", "/b", "id"]), true);
  assert.equal(isRuntimeRun(["/rootfs", "--", "true"]), false);
  assert.equal(isRuntimeRun(["--bundle", "/b"]), false);
  assert.equal(isRuntimeRun(["--bundle", "/b", "--", "sh"]), false);
  assert.equal(isRuntimeRun(["--name", "x", "--bundle", "/b"]), false);
  assert.equal(isRuntimeRun(["--help"]), false);
  assert.equal(isRuntimeRun(["--bundle=/b", "-pid-file", "/p", "id"]), true);
  // A boot-command flag, or a ROOTFS path as the one positional, is the boot command.
  assert.equal(isRuntimeRun(["--dry-run", "/rootfs"]), false);
  assert.equal(isRuntimeRun(["--cpus", "2", "id"]), false);
  assert.equal(isRuntimeRun(["./rootfs"]), false);
  assert.equal(isRuntimeRun(["id", "extra"]), false);
});

Deno.test("signals: names with or without SIG, any case, numbers; unknown names refused", () => {
  assert.equal(parseSignal("TERM"), 15);
  assert.equal(parseSignal("sigkill"), 9);
  assert.equal(parseSignal("9"), 9);
  assert.equal(parseSignal("RTMIN+2"), 36);
  assert.throws(() => parseSignal("FOO"), /unknown signal "FOO"/);
  assert.throws(() => parseSignal("0"), /unknown signal "0"/);
  assert.throws(() => parseSignal("65"), /1 to 64/);
});

Deno.test("ids: runc's charset, no path tricks", () => {
  assert.equal(validateId("abc-1.2_x"), "abc-1.2_x");
  for (const bad of ["", "../x", "a/b", ".hidden", "a".repeat(129), "a b"]) {
    assert.throws(() => validateId(bad), RuntimeError, bad);
  }
});
