/** VM size: vCPUs and memory, from flags or `io.containerd.nerdbox.resources.*`. */
import { SpecValidationError } from "./types.ts";

/** vCPUs when nothing says otherwise. */
export const DEFAULT_CPUS = 1;
/** Memory in MiB when nothing says otherwise. */
export const DEFAULT_MEMORY_MIB = 512;
/** Most vCPUs libkrun takes (`uint8_t`). */
export const MAX_CPUS = 255;
/** Least memory a guest boots with (below it the kernel deadlocks on memory). */
export const MIN_MEMORY_MIB = 128;
/** Most memory accepted (1 TiB). */
export const MAX_MEMORY_MIB = 1024 * 1024;

function fail(field: string, text: string, message: string): never {
  throw new SpecValidationError([{ annotation: field, field: "", value: text, message }]);
}

/** Parses a whole number of vCPUs (1–255); throws SpecValidationError naming `field`. */
export function parseCpus(text: string, field: string): number {
  if (!/^[1-9][0-9]{0,2}$/.test(text) || Number(text) > MAX_CPUS) {
    fail(field, text, `${JSON.stringify(text)}: expected a whole number of vCPUs from 1 to 255`);
  }
  return Number(text);
}

/**
 * Parses memory as MiB: a plain whole number, or with a suffix M/MiB or G/GiB (case-insensitive),
 * from 128 MiB to 1 TiB; throws SpecValidationError naming `field`.
 */
export function parseMemoryMiB(text: string, field: string): number {
  const m = /^([1-9][0-9]{0,7})(m|mi|mib|g|gi|gib)?$/i.exec(text);
  const expected = `expected MiB as a whole number (512) or with a suffix (512M, 1G), from ` +
    `${MIN_MEMORY_MIB} MiB to ${MAX_MEMORY_MIB / 1024} GiB`;
  if (!m) fail(field, text, `${JSON.stringify(text)}: ${expected}`);
  const unit = (m[2] ?? "m").toLowerCase().startsWith("g") ? 1024 : 1;
  const mib = Number(m[1]) * unit;
  if (mib < MIN_MEMORY_MIB || mib > MAX_MEMORY_MIB) {
    fail(field, text, `${JSON.stringify(text)} is ${mib} MiB: ${expected}`);
  }
  return mib;
}
