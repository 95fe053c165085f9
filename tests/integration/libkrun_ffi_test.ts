/**
 * ffi/libkrun.ts against the real libkrun 1.16 (as `deno task setup` installs it): every wrapped
 * call with good and bad arguments, the codes from the reference, and the crashes (NULL, a second
 * logger) the wrapper refuses before they reach libkrun. Process-ending cases run in subprocesses.
 */
import assert from "node:assert/strict";
import type { Libkrun } from "../../ffi/libkrun.ts";
import { KrunArgumentError, KrunError } from "../../ffi/libkrun_errors.ts";
import {
  NET_ALL_FEATURES,
  NET_FLAG_INCLUDE_VNET_HEADER,
  NET_FLAG_VFKIT,
} from "../../ffi/libkrun_symbols.ts";
import {
  LIBKRUNFW_SONAME,
  LibkrunNotFoundError,
  loadLibkrun,
  locateLibkrun,
  searchPaths,
} from "../../lib/vm/libkrun_locate.ts";
import { probeVnetHdr } from "../../lib/vm/libkrun_calls.ts";
import { macBytes, parseMac } from "../../lib/spec/mac.ts";
import { runLibkrunSnippet } from "../helpers/libkrun_subprocess.ts";

const MAC = macBytes(parseMac("5a:94:ef:e4:0c:ee"));
const noEnv = (name: string) => (name === "NERDBOX_LIBKRUN" ? undefined : Deno.env.get(name));

function lib(): Libkrun {
  return loadLibkrun({ env: noEnv });
}

/** Runs fn with a fresh context and frees it afterwards (if still known to libkrun). */
function withCtx(fn: (l: Libkrun, ctx: number) => void): void {
  const l = lib();
  const ctx = l.createCtx();
  try {
    fn(l, ctx);
  } finally {
    try {
      l.freeCtx(ctx);
    } catch {
      // consumed by the test
    }
  }
}

function krunError(call: string, errno: number, argPattern?: RegExp) {
  return (e: unknown) => {
    assert.ok(e instanceof KrunError, `expected KrunError, got ${e}`);
    assert.equal(e.call, call);
    assert.equal(e.errno, errno);
    assert.match(e.message, new RegExp(`^${call}\\(.*\\) failed: ${e.errnoName} \\(-${errno}\\)$`));
    if (argPattern) assert.match(e.message, argPattern);
    return true;
  };
}

function refused(call: string, param: string | RegExp) {
  return (e: unknown) => {
    assert.ok(e instanceof KrunArgumentError, `expected KrunArgumentError, got ${e}`);
    assert.equal(e.call, call);
    if (typeof param === "string") assert.equal(e.param, param);
    else assert.match(e.param, param);
    return true;
  };
}

// deno-lint-ignore no-explicit-any
const NULL = null as any;

Deno.test("locate: setup's libkrun is found without flags, libkrunfw beside it", () => {
  const loc = locateLibkrun({ env: noEnv });
  assert.equal(loc.source, "search");
  assert.match(loc.path, /\/libkrun\.so\.1$/);
  assert.equal(
    loc.libkrunfw,
    `${loc.path.slice(0, loc.path.lastIndexOf("/"))}/${LIBKRUNFW_SONAME}`,
  );
  assert.ok(searchPaths(noEnv).includes("/usr/local/lib/libkrun.so.1"));
});

Deno.test("locate: --libkrun / NERDBOX_LIBKRUN naming no file is an error listing it", () => {
  assert.throws(
    () => locateLibkrun({ explicit: "/nonexistent/nb/libkrun.so.1" }),
    (e: unknown) =>
      e instanceof LibkrunNotFoundError && e.searched.length === 1 &&
      /--libkrun names no file/.test(e.message) &&
      e.message.includes("/nonexistent/nb/libkrun.so.1"),
  );
  const env = (
    n: string,
  ) => (n === "NERDBOX_LIBKRUN" ? "/nonexistent/env/libkrun.so.1" : undefined);
  assert.throws(
    () => locateLibkrun({ env }),
    (e: unknown) =>
      e instanceof LibkrunNotFoundError && /NERDBOX_LIBKRUN/.test(e.message) &&
      e.message.includes("/nonexistent/env/libkrun.so.1"),
  );
});

Deno.test("locate: a symlinked libkrun elsewhere still gets its libkrunfw preloaded", async () => {
  const dir = await Deno.makeTempDir({ prefix: "nb-krun-locate-" });
  try {
    const real = locateLibkrun({ env: noEnv }).path;
    await Deno.symlink(Deno.realPathSync(real), `${dir}/libkrun.so.1`);
    const env = (n: string) => (n === "NERDBOX_LIBKRUN" ? `${dir}/libkrun.so.1` : undefined);
    const loc = locateLibkrun({ env });
    assert.equal(loc.source, "NERDBOX_LIBKRUN");
    assert.equal(loc.path, `${dir}/libkrun.so.1`);
    assert.ok(loc.libkrunfw?.endsWith(`/${LIBKRUNFW_SONAME}`));
    assert.ok(!loc.libkrunfw?.startsWith(dir));
    // LD_LIBRARY_PATH directories come before the system ones.
    const ld = (n: string) => (n === "LD_LIBRARY_PATH" ? dir : undefined);
    assert.equal(searchPaths(ld)[0], `${dir}/libkrun.so.1`);
    assert.equal(locateLibkrun({ env: ld }).path, `${dir}/libkrun.so.1`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("create/free: ids are distinct; freeing twice is ENOENT naming the ctx", () => {
  const l = lib();
  const a = l.createCtx();
  const b = l.createCtx();
  assert.ok(a >= 0 && b > a);
  l.freeCtx(a);
  l.freeCtx(b);
  assert.throws(() => l.freeCtx(a), krunError("krun_free_ctx", 2, new RegExp(`ctx_id=${a}`)));
  assert.throws(() => l.setVmConfig(a, 1, 512), krunError("krun_set_vm_config", 2));
  assert.throws(() => l.freeCtx(-1), refused("krun_free_ctx", "ctx_id"));
});

Deno.test("set_vm_config: 0 vCPUs EINVAL; 255 accepted; 256 refused before libkrun", () => {
  withCtx((l, ctx) => {
    l.setVmConfig(ctx, 1, 512);
    l.setVmConfig(ctx, 255, 256); // may overwrite
    assert.throws(
      () => l.setVmConfig(ctx, 0, 512),
      krunError("krun_set_vm_config", 22, /num_vcpus=0/),
    );
    assert.throws(() => l.setVmConfig(ctx, 256, 512), refused("krun_set_vm_config", "num_vcpus"));
    assert.throws(() => l.setVmConfig(ctx, 1.5, 512), refused("krun_set_vm_config", "num_vcpus"));
    assert.throws(() => l.setVmConfig(ctx, 1, -1), refused("krun_set_vm_config", "ram_mib"));
    l.splitIrqchip(ctx, true);
  });
});

Deno.test("set_root / add_virtiofs(2): paths unchecked at set time; NULL and NUL refused", () => {
  withCtx((l, ctx) => {
    l.setRoot(ctx, "/nonexistent/nb-root");
    l.addVirtiofs(ctx, "rootfs", "/nonexistent/nb-rootfs");
    l.addVirtiofs2(ctx, "data", "/nonexistent/nb-data", 1n << 20n);
    assert.throws(() => l.setRoot(ctx, NULL), refused("krun_set_root", "root_path"));
    assert.throws(() => l.setRoot(ctx, "/a\0b"), refused("krun_set_root", "root_path"));
    assert.throws(() => l.addVirtiofs(ctx, NULL, "/x"), refused("krun_add_virtiofs", "c_tag"));
    assert.throws(
      () => l.addVirtiofs2(ctx, "t", "/x", -1n),
      refused("krun_add_virtiofs2", "shm_size"),
    );
  });
});

Deno.test("set_kernel: missing RAW EINVAL at once, missing ELF accepted, unknown format EINVAL", () => {
  withCtx((l, ctx) => {
    assert.throws(
      () => l.setKernel(ctx, "/nonexistent/nb-vmlinux", 0),
      krunError("krun_set_kernel", 22, /kernel_path="\/nonexistent\/nb-vmlinux"/),
    );
    l.setKernel(ctx, "/nonexistent/nb-vmlinux", 1, undefined, "console=hvc0");
    assert.throws(() => l.setKernel(ctx, "/nonexistent/k", 9), krunError("krun_set_kernel", 22));
    assert.throws(
      () => l.setKernel(ctx, "/nonexistent/k", 1, "/nonexistent/nb-initrd"),
      krunError("krun_set_kernel", 22, /initramfs=/),
    );
  });
});

Deno.test("set_exec / set_env / set_workdir / set_rlimits: arrays NULL-terminated, never NULL", () => {
  withCtx((l, ctx) => {
    l.setExec(ctx, "/bin/sh", ["-c", "echo 'a b' \"q\""], ["A=1", "B=two words"]);
    l.setExec(ctx, "/bin/true", [], []);
    l.setEnv(ctx, ["X=1"]);
    l.setWorkdir(ctx, "/nonexistent/wd");
    l.setRlimits(ctx, ["7=1024:2048"]);
    assert.throws(() => l.setExec(ctx, NULL, [], []), refused("krun_set_exec", "exec_path"));
    assert.throws(() => l.setExec(ctx, "/bin/true", NULL, []), refused("krun_set_exec", "argv"));
    assert.throws(() => l.setExec(ctx, "/bin/true", [], NULL), refused("krun_set_exec", "envp"));
    assert.throws(
      () => l.setExec(ctx, "/bin/true", ["a", NULL], []),
      refused("krun_set_exec", "argv[1]"),
    );
    assert.throws(
      () => l.setEnv(ctx, new Array(4097).fill("A=1")),
      refused("krun_set_env", "envp"),
    );
    assert.throws(() => l.setRlimits(ctx, NULL), refused("krun_set_rlimits", "rlimits"));
    assert.throws(() => l.setWorkdir(ctx, NULL), refused("krun_set_workdir", "workdir_path"));
  });
});

Deno.test("set_port_map: HOST:GUEST only; addresses, /udp, >65535, duplicates EINVAL", () => {
  withCtx((l, ctx) => {
    l.setPortMap(ctx, ["8080:80", "0:81"]);
    for (
      const bad of [["127.0.0.1:8080:80"], ["53:53/udp"], ["70000:80"], ["1:80", "2:80"], [" 1:80"]]
    ) {
      assert.throws(() => l.setPortMap(ctx, bad), krunError("krun_set_port_map", 22, /port_map=/));
    }
    assert.throws(() => l.setPortMap(ctx, NULL), refused("krun_set_port_map", "port_map"));
  });
});

Deno.test("NICs: unixstream/unixgram path or fd, flags, features, MAC checks", () => {
  withCtx((l, ctx) => {
    l.addNetUnixstream(ctx, { path: "/nonexistent/nb.sock", mac: MAC, features: 0, flags: 0 });
    l.addNetUnixstream(ctx, {
      fd: 9,
      mac: macBytes(parseMac("02:00:00:00:00:02")),
      features: NET_ALL_FEATURES,
      flags: 0,
    });
    l.addNetUnixgram(ctx, {
      path: "/nonexistent/nb-g.sock",
      mac: new Uint8Array([2, 0, 0, 0, 0, 3]),
      features: 0,
      flags: NET_FLAG_VFKIT,
    });
    const n = { path: "/nonexistent/x.sock", mac: MAC, features: 0 };
    assert.throws(
      () => l.addNetUnixstream(ctx, { ...n, flags: NET_FLAG_VFKIT }),
      krunError("krun_add_net_unixstream", 22, /flags=1/),
    );
    assert.throws(
      () => l.addNetUnixgram(ctx, { ...n, flags: NET_FLAG_INCLUDE_VNET_HEADER }),
      krunError("krun_add_net_unixgram", 22, /flags=2/),
    );
    assert.throws(
      () => l.addNetUnixstream(ctx, { ...n, features: 1 << 2, flags: 0 }),
      krunError("krun_add_net_unixstream", 22, /features=4/),
    );
    // Refused before libkrun: it would read 6 bytes from a shorter buffer, or get NULL; text is
    // parsed once, in lib/spec/mac.ts, never here.
    assert.throws(
      () =>
        l.addNetUnixstream(ctx, {
          ...n,
          mac: "5a:94:ef:e4:0c:ee" as unknown as Uint8Array,
          flags: 0,
        }),
      refused("krun_add_net_unixstream", "c_mac"),
    );
    assert.throws(
      () => l.addNetUnixstream(ctx, { ...n, mac: new Uint8Array(2), flags: 0 }),
      refused("krun_add_net_unixstream", "c_mac"),
    );
    assert.throws(
      () => l.addNetUnixstream(ctx, { ...n, mac: NULL, flags: 0 }),
      refused("krun_add_net_unixstream", "c_mac"),
    );
    assert.throws(
      () => l.addNetUnixstream(ctx, { ...n, fd: 5, flags: 0 }),
      refused("krun_add_net_unixstream", "c_path/fd"),
    );
    assert.throws(
      () => l.addNetUnixgram(ctx, { mac: MAC, features: 0, flags: 0 }),
      refused("krun_add_net_unixgram", "c_path/fd"),
    );
  });
});

Deno.test("any NIC disables TSI: a port map after a NIC is EINVAL (also an empty one)", () => {
  withCtx((l, ctx) => {
    l.setPortMap(ctx, ["8080:80"]); // before: fine
    l.addNetUnixstream(ctx, { path: "/nonexistent/nb.sock", mac: MAC, features: 0, flags: 0 });
    assert.throws(() => l.setPortMap(ctx, ["8081:81"]), krunError("krun_set_port_map", 22));
    assert.throws(() => l.setPortMap(ctx, []), krunError("krun_set_port_map", 22));
  });
});

Deno.test("consoles: output file once; multiport ids; named inout ports", () => {
  withCtx((l, ctx) => {
    l.setConsoleOutput(ctx, "/nonexistent/nb-console.log");
    assert.throws(
      () => l.setConsoleOutput(ctx, "/nonexistent/again.log"),
      krunError("krun_set_console_output", 22),
    );
    const id0 = l.addVirtioConsoleMultiport(ctx);
    const id1 = l.addVirtioConsoleMultiport(ctx);
    assert.equal(id1, id0 + 1);
    l.addConsolePortInout(ctx, id0, "nerdbox.ctl", 3, 3);
    assert.throws(
      () => l.addConsolePortInout(ctx, id1 + 50, "x", 3, 3),
      krunError("krun_add_console_port_inout", 22, /console_id=/),
    );
    assert.throws(
      () => l.addConsolePortInout(ctx, id0, "x", -1, 3),
      refused("krun_add_console_port_inout", "input_fd"),
    );
    assert.throws(
      () => l.addConsolePortInout(ctx, id0, NULL, 3, 3),
      refused("krun_add_console_port_inout", "name"),
    );
    l.disableImplicitConsole(ctx);
  });
});

Deno.test("vsock ports, shutdown eventfd (EINVAL without EFI), setuid/setgid", () => {
  withCtx((l, ctx) => {
    l.addVsockPort(ctx, 1024, "/nonexistent/nb-vsock.sock");
    l.addVsockPort2(ctx, 1025, "/nonexistent/nb-vsock2.sock", true);
    l.addVsockPort2(ctx, 1025, "/nonexistent/nb-vsock3.sock", false); // overwrites
    assert.throws(() => l.addVsockPort(ctx, -1, "/x"), refused("krun_add_vsock_port", "port"));
    assert.throws(() => l.getShutdownEventfd(ctx), krunError("krun_get_shutdown_eventfd", 22));
    l.setuid(ctx, 0);
    l.setgid(ctx, 0);
    l.addDisk2(ctx, "vda", "/nonexistent/nb.img", 0, true);
    assert.throws(
      () => l.addDisk2(ctx, "vdb", "/nonexistent/nb.img", 3, true),
      krunError("krun_add_disk2", 22),
    );
  });
});

Deno.test("get_max_vcpus follows this host's /dev/kvm", () => {
  const l = lib();
  // It only asks /dev/kvm (KVM_CHECK_EXTENSION): a kvm_pvm device that cannot boot guests answers.
  if (kvmOpens()) assert.ok(l.getMaxVcpus() > 0);
  else assert.throws(() => l.getMaxVcpus(), krunError("krun_get_max_vcpus", 22));
});

/** True when /dev/kvm exists and opens read-write (whether or not it can run guests). */
function kvmOpens(): boolean {
  try {
    Deno.openSync("/dev/kvm", { read: true, write: true }).close();
    return true;
  } catch {
    return false;
  }
}

Deno.test("vnet_hdr probe: 1.16 rejects NET_FLAG_INCLUDE_VNET_HEADER", () => {
  assert.equal(probeVnetHdr(lib()), false);
});

Deno.test("logger once per process: the wrapper refuses a second init (raw libkrun aborts)", async () => {
  const r = await runLibkrunSnippet(`
    try { lib.initLog({ fd: 0, level: 1 }); } catch (e) { console.log("fd0", e.name, e.errnoName); }
    lib.initLog({ fd: -1, level: 1 });
    console.log("first ok");
    for (const second of [() => lib.setLogLevel(2), () => lib.initLog({ level: 1 })]) {
      try { second(); console.log("second accepted"); } catch (e) { console.log("second", e.name); }
    }
  `);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(r.stdout.trim().split("\n"), [
    "fd0 KrunError EINVAL",
    "first ok",
    "second KrunArgumentError",
    "second KrunArgumentError",
  ]);
  // What the wrapper prevents: the same second init straight into libkrun aborts the process.
  const raw = await runLibkrunSnippet(`
    lib.unsafeSymbols.krun_set_log_level(1);
    lib.unsafeSymbols.krun_set_log_level(1);
    console.log("survived");
  `);
  assert.equal(raw.signal ?? raw.code, raw.signal ? "SIGABRT" : 134, raw.stderr);
  assert.doesNotMatch(raw.stdout, /survived/);
});

Deno.test("NULL never reaches libkrun: refused by the wrapper (raw NULL crashes)", async () => {
  const r = await runLibkrunSnippet(`
    const ctx = lib.createCtx();
    const calls = [
      () => lib.setRoot(ctx, null),
      () => lib.setExec(ctx, null, [], []),
      () => lib.setPortMap(ctx, null),
      () => lib.addNetUnixstream(ctx, { path: "/x", mac: null, features: 0, flags: 0 }),
    ];
    for (const c of calls) { try { c(); console.log("accepted"); } catch (e) { console.log(e.name); } }
  `);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(r.stdout.trim().split("\n"), new Array(4).fill("KrunArgumentError"));
  const raw = await runLibkrunSnippet(`
    const ctx = lib.createCtx();
    lib.unsafeSymbols.krun_set_port_map(ctx, null);
    console.log("survived");
  `);
  assert.ok(
    raw.signal === "SIGSEGV" || raw.code === 139,
    `expected SIGSEGV, got ${raw.code}/${raw.signal}`,
  );
});

Deno.test("start_enter: unknown ctx ENOENT, missing disk EINVAL, both before any VM", async () => {
  const r = await runLibkrunSnippet(`
    try { await lib.startEnter(999999); } catch (e) { console.log(e.call, e.errnoName); }
    const ctx = lib.createCtx();
    lib.addDisk2(ctx, "vda", "/nonexistent/nb-start.img", 0, false);
    try { await lib.startEnter(ctx); } catch (e) { console.log(e.call, e.errnoName); }
    // start_enter removes the ctx even when it fails
    try { lib.freeCtx(ctx); } catch (e) { console.log(e.call, e.errnoName); }
  `);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(r.stdout.trim().split("\n"), [
    "krun_start_enter ENOENT",
    "krun_start_enter EINVAL",
    "krun_free_ctx ENOENT",
  ]);
});
