/** Booleans spelled exactly as Go's strconv.ParseBool accepts them. */
import { FieldError } from "./field_error.ts";

/** The spellings strconv.ParseBool reads as true. */
export const GO_TRUE = ["1", "t", "T", "TRUE", "true", "True"] as const;
/** The spellings strconv.ParseBool reads as false. */
export const GO_FALSE = ["0", "f", "F", "FALSE", "false", "False"] as const;

/** Parses a Go-style boolean; throws FieldError naming the accepted set otherwise. */
export function parseGoBool(text: string): boolean {
  if ((GO_TRUE as readonly string[]).includes(text)) return true;
  if ((GO_FALSE as readonly string[]).includes(text)) return false;
  throw new FieldError(
    `expected a boolean: one of ${[...GO_TRUE, ...GO_FALSE].join(" ")}`,
  );
}
