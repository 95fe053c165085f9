/**
 * The private containerd installs (scripts/setup_containerd.ts): the glibc need read from a .deb's
 * Depends, and the unpacked 1.7 and 2.1 trees really are those releases and run on this host.
 */
import { equal, match } from "node:assert/strict";
import {
  containerdDir,
  glibcNeed,
  hostGlibc,
  PRIVATE_CONTAINERD,
} from "../../scripts/setup_containerd.ts";

Deno.test("glibc need from a Depends field", () => {
  equal(glibcNeed("runc (>= 0.1.0~), libc6 (>= 2.34)"), "2.34");
  equal(glibcNeed("libc6 (>= 2.38), libdeflate0 (>= 1.0)"), "2.38");
  equal(glibcNeed("adduser"), "");
});

for (const { line, suite } of PRIVATE_CONTAINERD) {
  Deno.test(`containerd ${line} (Debian ${suite}) is installed privately and runs here`, async () => {
    const dir = containerdDir(line);
    const out = await new Deno.Command(`${dir}/usr/bin/containerd`, { args: ["--version"] })
      .output();
    equal(out.code, 0, new TextDecoder().decode(out.stderr));
    match(new TextDecoder().decode(out.stdout), new RegExp(` ${line.replace(".", "\\.")}\\.\\d+`));
    const ctr = await new Deno.Command(`${dir}/usr/bin/ctr`, { args: ["--version"] }).output();
    equal(ctr.code, 0);
    match(await Deno.readTextFile(`${dir}/DEB_VERSION`), new RegExp(`^containerd ${line}\\.`));
    match(await hostGlibc(), /^2\.\d+$/);
  });
}
