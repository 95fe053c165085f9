/**
 * A small seeded fuzz harness: a deterministic PRNG (xorshift128+ seeded by splitmix64), byte and
 * string mutators over seed corpora, and a runner bounded by iterations and wall time that checks
 * one invariant per input: the target returns, or throws one of the errors it documents — never a
 * raw TypeError/RangeError from deep inside, never past a per-input time bound. A failure names
 * the seed and iteration, so `NERDBOX_FUZZ_SEED=<seed>` replays it exactly.
 *
 * Bounds: NERDBOX_FUZZ_ITERATIONS (default per target, small for CI) and NERDBOX_FUZZ_SECONDS
 * (default 4 s per target) cap each run; `deno task fuzz` (NERDBOX_FUZZ_LONG=1) runs 200 000
 * iterations or 300 s per target.
 */

/** A deterministic pseudo-random generator (xorshift128+, 32-bit outputs). */
export class Rng {
  #s0: bigint;
  #s1: bigint;

  /** Seeds the generator (any 32-bit integer). */
  constructor(readonly seed: number) {
    let x = BigInt.asUintN(64, BigInt(seed >>> 0) + 0x9e3779b97f4a7c15n);
    const next = () => {
      x = BigInt.asUintN(64, x + 0x9e3779b97f4a7c15n);
      let z = x;
      z = BigInt.asUintN(64, (z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n);
      z = BigInt.asUintN(64, (z ^ (z >> 27n)) * 0x94d049bb133111ebn);
      return z ^ (z >> 31n);
    };
    this.#s0 = next();
    this.#s1 = next() | 1n;
  }

  /** The next 32-bit unsigned value. */
  u32(): number {
    let s1 = this.#s0;
    const s0 = this.#s1;
    this.#s0 = s0;
    s1 = BigInt.asUintN(64, s1 ^ (s1 << 23n));
    this.#s1 = s1 ^ s0 ^ (s1 >> 17n) ^ (s0 >> 26n);
    return Number(BigInt.asUintN(64, this.#s1 + s0) >> 32n);
  }

  /** An integer in [0, n). */
  int(n: number): number {
    return n <= 0 ? 0 : this.u32() % n;
  }

  /** True with probability p. */
  chance(p: number): boolean {
    return this.u32() / 0x1_0000_0000 < p;
  }

  /** One element of a non-empty list. */
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)];
  }

  /** n random bytes. */
  bytes(n: number): Uint8Array {
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i++) out[i] = this.u32() & 0xff;
    return out;
  }
}

/** Values that tend to break parsers: boundaries, separators, quoting, control bytes. */
export const INTERESTING_STRINGS: readonly string[] = [
  "",
  ",",
  "=",
  '"',
  '""',
  "\\",
  "\n",
  "\r\n",
  "\0",
  " ",
  "\t",
  "%d",
  "/",
  "..",
  "../../etc/passwd",
  "-1",
  "0",
  "4294967296",
  "9007199254740993",
  "1e309",
  "NaN",
  "__proto__",
  "constructor",
  "toString",
  "ff:ff:ff:ff:ff:ff",
  "02:00:00:00:00:01",
  "::",
  "fe80::1%eth0",
  "%2",
  "255.255.255.255/33",
  "é",
  "\u{1f600}",
  "\ud800",
  "a".repeat(300),
];

const INTERESTING_BYTES = [0x00, 0x01, 0x7f, 0x80, 0xfe, 0xff];

/** Returns a mutated copy of `input` (1–4 byte-level edits: flip, set, insert, delete, splice). */
export function mutateBytes(rng: Rng, input: Uint8Array, corpus: readonly Uint8Array[] = []) {
  let b = Array.from(input);
  const edits = 1 + rng.int(4);
  for (let e = 0; e < edits; e++) {
    const at = rng.int(b.length + 1);
    switch (rng.int(8)) {
      case 0:
        if (b.length) b[at % b.length] ^= 1 << rng.int(8);
        break;
      case 1:
        if (b.length) b[at % b.length] = rng.pick(INTERESTING_BYTES);
        break;
      case 2:
        b.splice(at, 0, ...rng.bytes(1 + rng.int(8)));
        break;
      case 3:
        b.splice(at, 1 + rng.int(8));
        break;
      case 4: {
        // a big-endian or little-endian u32/u16 length field set to an extreme
        const v = rng.pick([0, 1, 0xffff, 0x7fffffff, 0xffffffff, 4 << 20, (4 << 20) + 1]);
        const w = rng.chance(0.5) ? 4 : 2;
        for (let i = 0; i < w && at + i < b.length; i++) {
          const shift = rng.chance(0.5) ? (w - 1 - i) * 8 : i * 8;
          b[at + i] = (v >>> shift) & 0xff;
        }
        break;
      }
      case 5:
        if (corpus.length) {
          const other = rng.pick(corpus);
          const from = rng.int(other.length + 1);
          b.splice(at, 0, ...other.subarray(from, from + 1 + rng.int(32)));
        }
        break;
      case 6:
        b = b.slice(0, at); // truncate
        break;
      default:
        if (b.length) {
          const from = rng.int(b.length);
          const len = 1 + rng.int(Math.min(16, b.length - from));
          b.splice(at, 0, ...b.slice(from, from + len)); // duplicate a run
        }
    }
  }
  return new Uint8Array(b);
}

/** Returns a mutated copy of a string (character-level edits plus interesting insertions). */
export function mutateString(rng: Rng, input: string, corpus: readonly string[] = []): string {
  let s = input;
  const edits = 1 + rng.int(3);
  for (let e = 0; e < edits; e++) {
    const at = rng.int(s.length + 1);
    switch (rng.int(6)) {
      case 0:
        s = s.slice(0, at) + rng.pick(INTERESTING_STRINGS) + s.slice(at);
        break;
      case 1:
        s = s.slice(0, at) + s.slice(at + 1 + rng.int(6));
        break;
      case 2:
        s = s.slice(0, at) + String.fromCharCode(rng.int(128)) + s.slice(at);
        break;
      case 3:
        if (corpus.length) {
          const o = rng.pick(corpus);
          const from = rng.int(o.length + 1);
          s = s.slice(0, at) + o.slice(from, from + 1 + rng.int(24)) + s.slice(at);
        }
        break;
      case 4:
        s = s.slice(0, at);
        break;
      default: {
        const from = rng.int(s.length + 1);
        s = s.slice(0, at) + s.slice(from, from + 1 + rng.int(12)) + s.slice(at);
      }
    }
  }
  return s;
}

/** A JSON value mutated structurally: replace, delete or add a member somewhere inside. */
export function mutateJson(rng: Rng, value: unknown, depth = 0): unknown {
  const leaf = (): unknown =>
    rng.pick<() => unknown>([
      () => null,
      () => true,
      () => rng.int(5) - 1,
      () => rng.pick([1.5, -0, 1e308, 4294967296, -1, Number.MAX_SAFE_INTEGER + 2]),
      () => rng.pick(INTERESTING_STRINGS),
      () => [],
      () => ({}),
      () => [rng.pick(INTERESTING_STRINGS)],
    ])();
  if (depth > 6 || value === null || typeof value !== "object") {
    if (typeof value === "string" && rng.chance(0.6)) return mutateString(rng, value);
    return leaf();
  }
  if (Array.isArray(value)) {
    const a = [...value];
    const op = rng.int(4);
    if (op === 0 || a.length === 0) a.splice(rng.int(a.length + 1), 0, leaf());
    else if (op === 1) a.splice(rng.int(a.length), 1);
    else {
      const i = rng.int(a.length);
      a[i] = mutateJson(rng, a[i], depth + 1);
    }
    return a;
  }
  const o: Record<string, unknown> = { ...(value as Record<string, unknown>) };
  const keys = Object.keys(o);
  const op = rng.int(5);
  if (op === 0 || keys.length === 0) {
    // defineProperty: a "__proto__" key becomes an own member, as JSON.parse would make it
    Object.defineProperty(o, rng.pick([...INTERESTING_STRINGS, ...keys]), {
      value: leaf(),
      enumerable: true,
      writable: true,
      configurable: true,
    });
  } else if (op === 1) delete o[rng.pick(keys)];
  else {
    const k = rng.pick(keys);
    o[k] = mutateJson(rng, o[k], depth + 1);
  }
  return o;
}

/** What a fuzz target may do with an input besides returning. */
export interface FuzzTarget<T> {
  /** Name shown in failures. */
  name: string;
  /** Seed inputs (valid and near-valid). */
  corpus: readonly T[];
  /** Produces the next input from a corpus element. */
  mutate: (rng: Rng, seed: T, corpus: readonly T[]) => T;
  /** Runs the code under test; may be async. */
  run: (input: T) => unknown;
  /** Whether a thrown value is an acceptable, typed rejection (default: any non-TypeError/RangeError Error). */
  accepts?: (err: unknown) => boolean;
  /** Default iteration count in CI (NERDBOX_FUZZ_ITERATIONS overrides). */
  iterations?: number;
  /** Longest one input may take (ms). */
  perInputMs?: number;
}

/** Why one input broke the invariant. */
export class FuzzFailure extends Error {
  constructor(
    target: string,
    readonly seed: number,
    readonly iteration: number,
    readonly input: unknown,
    cause: string,
  ) {
    super(
      `fuzz ${target}: ${cause}\n  replay: NERDBOX_FUZZ_SEED=${seed} (iteration ${iteration})\n` +
        `  input: ${describe(input)}`,
    );
    this.name = "FuzzFailure";
  }
}

function describe(input: unknown): string {
  const text = input instanceof Uint8Array
    ? `bytes[${input.length}] ${
      Array.from(input.subarray(0, 96), (b) => b.toString(16).padStart(2, "0")).join("")
    }`
    : JSON.stringify(input, (_k, v) => (typeof v === "bigint" ? String(v) : v));
  return text.length > 600 ? `${text.slice(0, 600)}… (${text.length} chars)` : text;
}

/** The default invariant: an Error that is not a raw engine TypeError/RangeError/SyntaxError. */
export function isTypedError(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  const raw = err.constructor === TypeError || err.constructor === RangeError ||
    err.constructor === ReferenceError || err.constructor === EvalError;
  return !raw;
}

function envInt(name: string): number | undefined {
  const v = Deno.env.get(name);
  if (v === undefined || v === "") return undefined;
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < 0) throw new Error(`${name}=${v}: expected an integer`);
  return n;
}

/** What a fuzz run did. */
export interface FuzzReport {
  seed: number;
  iterations: number;
  accepted: number;
  rejected: number;
}

/**
 * Runs a target: each iteration mutates a corpus element (or a previous input) and checks the
 * invariant. Seed from NERDBOX_FUZZ_SEED or `seed`; bounded by iterations and NERDBOX_FUZZ_SECONDS.
 * Throws FuzzFailure (naming the seed) on the first violation.
 */
export async function fuzz<T>(target: FuzzTarget<T>, seed = 1): Promise<FuzzReport> {
  const s = envInt("NERDBOX_FUZZ_SEED") ?? seed;
  const long = Deno.env.get("NERDBOX_FUZZ_LONG") === "1";
  const iterations = envInt("NERDBOX_FUZZ_ITERATIONS") ??
    (long ? 200_000 : target.iterations ?? 2000);
  const seconds = envInt("NERDBOX_FUZZ_SECONDS") ??
    (long || Deno.env.get("NERDBOX_FUZZ_ITERATIONS") ? 300 : 4);
  const perInput = target.perInputMs ?? 1000;
  const accepts = target.accepts ?? isTypedError;
  const rng = new Rng(s);
  const deadline = Date.now() + seconds * 1000;
  const recent: T[] = [];
  const report: FuzzReport = { seed: s, iterations: 0, accepted: 0, rejected: 0 };
  for (let i = 0; i < iterations && Date.now() < deadline; i++) {
    const pool = recent.length && rng.chance(0.3) ? recent : target.corpus;
    const base = i < target.corpus.length ? target.corpus[i] : rng.pick(pool);
    const input = i < target.corpus.length ? base : target.mutate(rng, base, target.corpus);
    const t0 = performance.now();
    try {
      await target.run(input);
      report.accepted++;
    } catch (err) {
      if (!accepts(err)) {
        const e = err as Error;
        throw new FuzzFailure(
          target.name,
          s,
          i,
          input,
          `threw ${e?.constructor?.name ?? typeof err}: ${e?.message ?? String(err)}\n${
            (e?.stack ?? "").split("\n").slice(1, 5).join("\n")
          }`,
        );
      }
      report.rejected++;
    }
    const took = performance.now() - t0;
    if (took > perInput) {
      throw new FuzzFailure(target.name, s, i, input, `took ${took.toFixed(0)} ms (> ${perInput})`);
    }
    report.iterations++;
    if (rng.chance(0.2)) {
      recent.push(input);
      if (recent.length > 64) recent.shift();
    }
  }
  return report;
}

/** Encodes a string as UTF-8. */
export function utf8(s: string): Uint8Array {
  return new TextEncoder().encode(s);
}
