/** The one boot-timeout override both backends honour (`NERDBOX_BOOT_TIMEOUT_MS`). */

/** NERDBOX_BOOT_TIMEOUT_MS when set to a positive integer (both backends honour it). */
export function bootTimeoutOverride(): number | undefined {
  const v = Number(Deno.env.get("NERDBOX_BOOT_TIMEOUT_MS"));
  return Number.isInteger(v) && v > 0 ? v : undefined;
}
