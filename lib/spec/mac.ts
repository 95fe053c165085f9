/** Ethernet MAC addresses for VM NICs. */
import { FieldError } from "./field_error.ts";

const MAC_RE = /^[0-9A-Fa-f]{2}([:-])[0-9A-Fa-f]{2}(\1[0-9A-Fa-f]{2}){4}$/;

/**
 * Parses a 6-byte unicast MAC (`aa:bb:cc:dd:ee:ff`, also with `-`), returning the lower-case
 * colon form; throws FieldError for anything else, multicast or all-zero.
 */
export function parseMac(text: string): string {
  if (!MAC_RE.test(text)) {
    throw new FieldError(
      "expected a MAC address of 6 hex byte pairs separated by ':', e.g. 02:00:00:00:00:01",
    );
  }
  const mac = text.toLowerCase().replaceAll("-", ":");
  const bytes = macBytes(mac);
  if (bytes.every((b) => b === 0)) {
    throw new FieldError("expected a unicast MAC, got the all-zero address");
  }
  if (bytes[0] & 1) {
    throw new FieldError(
      "expected a unicast MAC, got a multicast one (bit 0 of the first byte is set)",
    );
  }
  return mac;
}

/** The 6 bytes of a normalised MAC (as returned by parseMac), for libkrun's `uint8_t mac[6]`. */
export function macBytes(mac: string): Uint8Array {
  return new Uint8Array(mac.split(/[:-]/).map((h) => parseInt(h, 16)));
}

/** True when the MAC is locally administered (bit 1 of the first byte). */
export function isLocallyAdministered(mac: string): boolean {
  return (macBytes(mac)[0] & 2) !== 0;
}
