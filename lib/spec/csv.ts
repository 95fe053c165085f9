/** One RFC 4180 CSV record (a quoted field may hold commas, newlines and doubled quotes). */
import { parse } from "csv-parse/sync";
import { FieldError } from "./field_error.ts";

/** Splits `text` into the fields of exactly one CSV record; throws FieldError otherwise. */
export function parseCsvRecord(text: string): string[] {
  // Without quotes or line breaks an RFC 4180 record is exactly its comma-separated fields;
  // csv-parse costs ~1000x more per call, so it only sees records that need it.
  if (text !== "" && !/["\r\n]/.test(text)) return text.split(",");
  let records: string[][];
  try {
    records = parse(text, {
      bom: false,
      relax_column_count: true,
      relax_quotes: false,
      skip_empty_lines: false,
      trim: false,
    }) as string[][];
  } catch (e) {
    throw new FieldError(`expected one RFC 4180 CSV record: ${csvProblem(e)}`);
  }
  if (records.length === 0) throw new FieldError("expected one CSV record, got an empty value");
  if (records.length > 1) {
    throw new FieldError(
      `expected one CSV record, got ${records.length} lines (quote a field that holds a newline)`,
    );
  }
  return records[0];
}

/** Quotes one field for a CSV record when it needs it (comma, quote, CR or LF). */
export function quoteCsvField(field: string): string {
  return /[",\r\n]/.test(field) ? `"${field.replaceAll('"', '""')}"` : field;
}

/** Joins fields into one CSV record, quoting where needed. */
export function formatCsvRecord(fields: readonly string[]): string {
  return fields.map(quoteCsvField).join(",");
}

/** A short explanation of a csv-parse error. */
function csvProblem(e: unknown): string {
  const code = (e as { code?: string }).code;
  if (code === "CSV_QUOTE_NOT_CLOSED") return "a quoted field is never closed";
  if (code === "INVALID_OPENING_QUOTE" || code === "CSV_INVALID_CLOSING_QUOTE") {
    return 'a stray \'"\': quote the whole field and double inner quotes, e.g. "socket=/a""b"';
  }
  return e instanceof Error ? e.message : String(e);
}
