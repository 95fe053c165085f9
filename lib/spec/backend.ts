/** Which VMM runs a sandbox: `auto`, `libkrun` or `qemu`. */
import { type BackendChoice, SpecValidationError } from "./types.ts";
import { didYouMean } from "./suggest.ts";

/** Every accepted backend name. */
export const BACKENDS: readonly BackendChoice[] = ["auto", "libkrun", "qemu"];

/** Parses a backend name; throws SpecValidationError naming `field`. */
export function parseBackend(text: string, field: string): BackendChoice {
  if ((BACKENDS as readonly string[]).includes(text)) return text as BackendChoice;
  throw new SpecValidationError([{
    annotation: field,
    field: "",
    value: text,
    message: `${JSON.stringify(text)}: expected one of auto, libkrun, qemu${
      didYouMean(text, BACKENDS)
    }`,
  }]);
}
