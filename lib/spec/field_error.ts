/**
 * A problem with one field's value, thrown by the small single-field parsers in lib/spec and turned
 * into a SpecError (with annotation, field and value) by whoever knows those.
 */
export class FieldError extends Error {
  /** Builds the error; `message` says what was expected. */
  constructor(message: string) {
    super(message);
    this.name = "FieldError";
  }
}
