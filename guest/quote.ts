/** Quoting of untrusted text for log lines and error messages. */

/** JSON-quotes `text` (cut to `max` characters) with everything outside printable ASCII escaped. */
export function quote(text: string, max = 80): string {
  const cut = text.length > max ? `${text.slice(0, max)}...` : text;
  return JSON.stringify(cut).replace(
    /[^\x20-\x7e]/g,
    (ch) => `\\u${ch.charCodeAt(0).toString(16).padStart(4, "0")}`,
  );
}
