/**
 * Stdio fifos and rootfs mounts on the real kernel: output reaches a reader holding the other end
 * (as ctr does) and ends with EOF when the shim closes; stdin flows in and a pending stdin open is
 * released by closing; bind and overlay mounts go on and come off again.
 */
import { deepEqual, equal, ok, rejects } from "node:assert/strict";
import { openProcessIo, StdioError } from "../../lib/shim/stdio.ts";
import { isMounted, mountArgs, mountRootfs, unmountAll } from "../../lib/shim/mounts.ts";

async function mkfifo(path: string): Promise<void> {
  const r = await new Deno.Command("mkfifo", { args: [path] }).output();
  if (!r.success) throw new Error("mkfifo failed");
}

/** Reads a fifo to EOF in a child process (the reader end ctr would hold). */
function catFifo(path: string): Promise<string> {
  return new Deno.Command("cat", { args: [path], stdout: "piped" }).output()
    .then((o) => new TextDecoder().decode(o.stdout));
}

Deno.test("stdout/stderr fifos: every byte reaches the reader, then EOF on close", async () => {
  const dir = await Deno.makeTempDir({ prefix: "nerdbox-shim-io-" });
  try {
    await mkfifo(`${dir}/out`);
    await mkfifo(`${dir}/err`);
    const outText = catFifo(`${dir}/out`);
    const errText = catFifo(`${dir}/err`);
    const io = await openProcessIo({
      stdin: "",
      stdout: `${dir}/out`,
      stderr: `${dir}/err`,
      terminal: false,
    });
    const big = "x".repeat(300_000) + "\n";
    const w = io.stdout.getWriter();
    await w.write(new TextEncoder().encode("line1\n"));
    await w.write(new TextEncoder().encode(big));
    await w.close();
    const e = io.stderr.getWriter();
    await e.write(new TextEncoder().encode("oops\n"));
    await e.close();
    await io.report("nerdbox: failed\n");
    await io.close();
    equal(await outText, "line1\n" + big);
    equal(await errText, "oops\nnerdbox: failed\n");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("stdin fifo: data flows until the writer closes; closing unblocks a pending open", async () => {
  const dir = await Deno.makeTempDir({ prefix: "nerdbox-shim-io-" });
  try {
    await mkfifo(`${dir}/in`);
    const io = await openProcessIo({
      stdin: `${dir}/in`,
      stdout: "",
      stderr: "",
      terminal: false,
    });
    const writer = new Deno.Command("sh", {
      args: ["-c", `printf 'hello\\nworld\\n' > ${dir}/in`],
    }).output();
    const got = await new Response(io.stdin!).text();
    equal(got, "hello\nworld\n");
    ok((await writer).success);
    await io.close();

    // Nobody ever opens the write end: close() must still release the blocked open.
    await mkfifo(`${dir}/in2`);
    const io2 = await openProcessIo({
      stdin: `${dir}/in2`,
      stdout: "",
      stderr: "",
      terminal: false,
    });
    const reading = new Response(io2.stdin!).text();
    await new Promise((r) => setTimeout(r, 100));
    io2.closeStdin();
    equal(await reading, "");
    await io2.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("terminal mode sends stderr to stdout; bad stdio URIs are refused by name", async () => {
  const dir = await Deno.makeTempDir({ prefix: "nerdbox-shim-io-" });
  try {
    const io = await openProcessIo({
      stdin: "",
      stdout: `file://${dir}/log.txt`,
      stderr: "",
      terminal: true,
    });
    const w = io.stderr.getWriter();
    await w.write(new TextEncoder().encode("to-terminal\n"));
    await w.close();
    await io.close();
    equal(await Deno.readTextFile(`${dir}/log.txt`), "to-terminal\n");
    await rejects(
      openProcessIo({ stdin: "", stdout: "binary:///usr/bin/logger", stderr: "", terminal: false }),
      (e) => e instanceof StdioError && /binary:\/\/ loggers are not supported/.test(e.message),
    );
    await rejects(
      openProcessIo({ stdin: "", stdout: "relative/out", stderr: "", terminal: false }),
      (e) =>
        e instanceof StdioError && /"relative\/out": expected an absolute path/.test(e.message),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("mount(8) argv for overlay and bind mounts", () => {
  deepEqual(
    mountArgs({ type: "overlay", source: "overlay", options: ["index=off", "lowerdir=/l"] }, "/t"),
    ["-t", "overlay", "-o", "index=off,lowerdir=/l", "--", "overlay", "/t"],
  );
  deepEqual(
    mountArgs({ type: "bind", source: "/s", options: ["rbind", "rw"] }, "/t"),
    ["--rbind", "-o", "rw", "--", "/s", "/t"],
  );
});

Deno.test("rootfs mounts go on in order and come off (overlay over a bind)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "nerdbox-shim-mnt-" });
  const target = `${dir}/rootfs`;
  try {
    for (const d of ["lower", "upper", "work", "rootfs"]) await Deno.mkdir(`${dir}/${d}`);
    await Deno.writeTextFile(`${dir}/lower/hello`, "from lower\n");
    await mountRootfs([{
      type: "overlay",
      source: "overlay",
      options: [`lowerdir=${dir}/lower`, `upperdir=${dir}/upper`, `workdir=${dir}/work`],
    }], target);
    ok(await isMounted(target));
    equal(await Deno.readTextFile(`${target}/hello`), "from lower\n");
    await mountRootfs([{ type: "bind", source: `${dir}/lower`, options: ["rbind", "ro"] }], target);
    await unmountAll(target);
    equal(await isMounted(target), false);
    await unmountAll(target); // idempotent

    // A failing mount leaves nothing mounted and names the source.
    await rejects(
      mountRootfs([
        { type: "bind", source: `${dir}/lower`, options: ["rbind"] },
        { type: "overlay", source: "overlay", options: [`lowerdir=${dir}/missing`] },
      ], target),
      /mount overlay "overlay" on .* failed/,
    );
    equal(await isMounted(target), false);
  } finally {
    await unmountAll(target).catch(() => {});
    await Deno.remove(dir, { recursive: true });
  }
});
