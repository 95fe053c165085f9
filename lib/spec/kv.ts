/** A CSV record of `key=value` fields, split and checked against a key list. */
import type { SpecError } from "./types.ts";
import { parseCsvRecord } from "./csv.ts";
import { FieldError } from "./field_error.ts";
import { didYouMean } from "./suggest.ts";

/** One `key=value` field, in record order. */
export interface KeyValue {
  key: string;
  value: string;
}

/** The fields of one record with the problems found while splitting it. */
export interface KeyValueRecord {
  fields: KeyValue[];
  errors: SpecError[];
  /** True when the text was not one CSV record (no fields at all). */
  malformed: boolean;
}

/**
 * Splits `text` (one CSV record) into `key=value` fields. Unknown keys (with the nearest known
 * one), fields without '=', empty fields and repeats of keys not in `repeatable` are errors.
 */
export function parseKeyValueRecord(
  text: string,
  annotation: string,
  keys: readonly string[],
  repeatable: readonly string[] = [],
): KeyValueRecord {
  const errors: SpecError[] = [];
  let raw: string[];
  try {
    raw = parseCsvRecord(text);
  } catch (e) {
    if (!(e instanceof FieldError)) throw e;
    return {
      fields: [],
      errors: [{ annotation, field: "", value: text, message: e.message }],
      malformed: true,
    };
  }
  const fields: KeyValue[] = [];
  const seen = new Set<string>();
  const expected = `expected key=value with a key from ${keys.join(", ")}`;
  for (const f of raw) {
    const eq = f.indexOf("=");
    if (f === "") {
      errors.push({
        annotation,
        field: "",
        value: text,
        message: `an empty field (two commas in a row, or a trailing comma): ${expected}`,
      });
      continue;
    }
    if (eq < 0) {
      errors.push({
        annotation,
        field: f,
        value: "",
        message: `this field has no '=': ${expected}`,
      });
      continue;
    }
    const key = f.slice(0, eq);
    const value = f.slice(eq + 1);
    if (!keys.includes(key)) {
      errors.push({
        annotation,
        field: key,
        value,
        message: `unknown key: ${expected}${didYouMean(key, keys)}`,
      });
      continue;
    }
    if (seen.has(key) && !repeatable.includes(key)) {
      errors.push({
        annotation,
        field: key,
        value,
        message: `repeated key: give ${key} only once`,
      });
      continue;
    }
    seen.add(key);
    fields.push({ key, value });
  }
  return { fields, errors, malformed: false };
}

/** Helpers for checking one record's fields: each problem becomes a SpecError in `errors`. */
export interface FieldChecks {
  /** The first value of `key`, if given. */
  get(key: string): string | undefined;
  /** Records a problem with `field`'s value `v`. */
  err(field: string, v: string, message: string): void;
  /** Runs `fn`; a FieldError it throws is recorded for `field` and yields undefined. */
  check<T>(field: string, v: string, fn: () => T): T | undefined;
}

/** FieldChecks over `record`, naming `annotation` in every error. */
export function fieldChecks(record: KeyValueRecord, annotation: string): FieldChecks {
  const err = (field: string, v: string, message: string) => {
    record.errors.push({ annotation, field, value: v, message });
  };
  return {
    get: (k) => record.fields.find((f) => f.key === k)?.value,
    err,
    check<T>(field: string, v: string, fn: () => T): T | undefined {
      try {
        return fn();
      } catch (e) {
        if (!(e instanceof FieldError)) throw e;
        err(field, v, e.message);
        return undefined;
      }
    },
  };
}
