/**
 * The shared CRI conformance kit (`<checkout>/../shared/tools/cri-kit`, critest v1.35.0): where it
 * is, how its summary line and results read, and the baseline docs/kubernetes.md records (the
 * minimum passed count and every spec expected to fail, each with its reason).
 */
import { type ContainerdLine, REPO } from "./containerd.ts";

/** `critest: N passed, N failed, N skipped (runtime R)`, parsed. */
export interface CritestSummary {
  passed: number;
  failed: number;
  skipped: number;
  runtime: string;
}

/** What docs/kubernetes.md records about critest with nerdbox. */
export interface CritestBaseline {
  /** `critest baseline, containerd L: N passed` for the line asked for */
  minPassed: number;
  /** Backticked spec names of the "Known failures" list, with their reasons. */
  knownFailures: Map<string, string>;
}

/**
 * The kit's directory: NERDBOX_CRI_KIT, else `../shared/tools/cri-kit` relative to the checkout
 * (CI), else the same one level further up (a worktree under `<work>/wt/`). Throws when none has
 * `run-critest.sh`.
 */
export async function findCriKit(): Promise<string> {
  const env = Deno.env.get("NERDBOX_CRI_KIT");
  const candidates = env
    ? [env]
    : [`${REPO}/../shared/tools/cri-kit`, `${REPO}/../../shared/tools/cri-kit`];
  for (const dir of candidates) {
    if (await Deno.stat(`${dir}/run-critest.sh`).then((s) => s.isFile, () => false)) {
      return await Deno.realPath(dir);
    }
  }
  throw new Error(
    `the CRI kit is missing: no run-critest.sh in ${candidates.join(" or ")} ` +
      `(set NERDBOX_CRI_KIT to its directory)`,
  );
}

/** Parses the kit's last output line; throws naming the text when it has another form. */
export function parseCritestSummary(text: string): CritestSummary {
  const last = text.trimEnd().split("\n").at(-1) ?? "";
  const m = /^critest: (\d+) passed, (\d+) failed, (\d+) skipped \(runtime ([\w.-]+)\)$/.exec(last);
  if (!m) throw new Error(`cri-kit: last line is not a critest summary: ${JSON.stringify(last)}`);
  return { passed: +m[1], failed: +m[2], skipped: +m[3], runtime: m[4] };
}

/** Spec names with status FAIL in the kit's results.txt (`STATUS name` per line). */
export function failedSpecs(resultsTxt: string): string[] {
  return resultsTxt.split("\n").filter((l) => l.startsWith("FAIL ")).map((l) => l.slice(5));
}

/**
 * Reads the baseline for containerd `line` from the markdown of docs/kubernetes.md: the line
 * `critest baseline, containerd L: N passed` and, under the heading `### Known failures`, one
 * bullet per spec: `` - `name`: reason `` (one list for every containerd line).
 */
export function parseCritestBaseline(markdown: string, line: ContainerdLine): CritestBaseline {
  const head = `critest baseline, containerd ${line}:`;
  const at = markdown.indexOf(head);
  const m = at < 0 ? null : /^\s*\*{0,2}(\d+) passed/.exec(markdown.slice(at + head.length));
  if (!m) throw new Error(`docs/kubernetes.md: no '${head} N passed' line`);
  const knownFailures = new Map<string, string>();
  const section = markdown.split(/^### Known failures\s*$/m)[1]?.split(/^#{1,3} /m)[0] ?? "";
  // A bullet may wrap: indented lines continue it (deno fmt wraps at 100 columns).
  const bullets: string[] = [];
  for (const line of section.split("\n")) {
    if (line.startsWith("- ")) bullets.push(line);
    else if (/^\s+\S/.test(line) && bullets.length > 0) {
      bullets[bullets.length - 1] += ` ${line.trim()}`;
    }
  }
  for (const bullet of bullets) {
    const b = /^- `([^`]+)`:\s*(.+)$/.exec(bullet.trim());
    if (b) knownFailures.set(b[1], b[2]);
  }
  return { minPassed: +m[1], knownFailures };
}
