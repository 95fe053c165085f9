/**
 * Marshalling for libkrun calls: an arena that builds C strings, string arrays and MAC bytes and
 * keeps them reachable until the call returns, and the integer/boolean checks that turn a bad
 * argument into a KrunArgumentError naming the call and parameter instead of a crash.
 */
import { KrunArgumentError } from "./libkrun_errors.ts";
import { MAX_STRING_ARRAY } from "./libkrun_symbols.ts";

const enc = new TextEncoder();

/** Holds the buffers of one call so they stay reachable until it returns. */
export class Arena {
  readonly #keep: ArrayBufferView[] = [];

  /** A NUL-terminated copy of `value` (a string without NUL bytes). */
  cstr(call: string, param: string, value: unknown): Uint8Array<ArrayBuffer> {
    if (typeof value !== "string") {
      throw new KrunArgumentError(call, param, `expected a string, got ${describe(value)}`);
    }
    if (value.includes("\0")) {
      throw new KrunArgumentError(call, param, `contains a NUL byte: ${JSON.stringify(value)}`);
    }
    const buf = new Uint8Array(enc.encode(value).length + 1);
    enc.encodeInto(value, buf);
    this.#keep.push(buf);
    return buf;
  }

  /** A pointer to `buf`, kept alive with the arena. */
  ptr(buf: ArrayBufferView<ArrayBuffer>): Deno.PointerObject {
    this.#keep.push(buf);
    const p = Deno.UnsafePointer.of(buf);
    if (p === null) throw new Error("internal: pointer to a live buffer is NULL");
    return p;
  }

  /** A NULL-terminated `char *const[]`. */
  strArray(call: string, param: string, values: unknown): Deno.PointerObject {
    if (!Array.isArray(values)) {
      throw new KrunArgumentError(
        call,
        param,
        `expected an array of strings, got ${describe(values)}`,
      );
    }
    if (values.length > MAX_STRING_ARRAY) {
      throw new KrunArgumentError(
        call,
        param,
        `${values.length} entries, libkrun accepts at most ${MAX_STRING_ARRAY}`,
      );
    }
    const addrs = new BigUint64Array(values.length + 1);
    values.forEach((v, i) => {
      const p = this.ptr(this.cstr(call, `${param}[${i}]`, v));
      addrs[i] = BigInt(Deno.UnsafePointer.value(p));
    });
    addrs[values.length] = 0n;
    return this.ptr(addrs);
  }

  /** The 6 bytes of a MAC (`uint8_t c_mac[6]`), copied. */
  mac(call: string, param: string, value: unknown): Uint8Array<ArrayBuffer> {
    if (!(value instanceof Uint8Array) || value.length !== 6) {
      throw new KrunArgumentError(
        call,
        param,
        `expected a 6-byte Uint8Array, got ${describe(value)}`,
      );
    }
    const bytes = new Uint8Array(value);
    this.#keep.push(bytes);
    return bytes;
  }

  /** Keeps every buffer reachable up to this point (call it after the FFI call returns). */
  release(): number {
    return this.#keep.length;
  }
}

/** A short description of a bad argument for an error message. */
export function describe(v: unknown): string {
  if (v === null) return "null";
  if (v === undefined) return "undefined";
  if (v instanceof Uint8Array) return `a ${v.length}-byte Uint8Array`;
  return `${typeof v} ${JSON.stringify(v)}`;
}

/** `v` if it is an integer in min..max, else a KrunArgumentError. */
export function checkInt(
  call: string,
  param: string,
  v: unknown,
  min: number,
  max: number,
): number {
  if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > max) {
    throw new KrunArgumentError(
      call,
      param,
      `expected an integer in ${min}..${max}, got ${describe(v)}`,
    );
  }
  return v;
}

/** Largest u32. */
export const U32_MAX = 0xffff_ffff;
/** Smallest i32. */
export const I32_MIN = -0x8000_0000;
/** Largest i32. */
export const I32_MAX = 0x7fff_ffff;

/** A checked context id. */
export function ctxId(call: string, ctx: unknown): number {
  return checkInt(call, "ctx_id", ctx, 0, I32_MAX);
}

/** `v` if it is a boolean, else a KrunArgumentError. */
export function checkBool(call: string, param: string, v: unknown): boolean {
  if (typeof v !== "boolean") {
    throw new KrunArgumentError(call, param, `expected a boolean, got ${describe(v)}`);
  }
  return v;
}
