/** Ethernet MAC addresses for VM NICs: the one parser, the branded type and the byte form. */
import { FieldError } from "./field_error.ts";

declare const macBrand: unique symbol;
/** A checked unicast MAC in lower-case colon form (`aa:bb:cc:dd:ee:ff`); made only by parseMac. */
export type Mac = string & { readonly [macBrand]: "Mac" };

const MAC_RE = /^[0-9A-Fa-f]{2}([:-])[0-9A-Fa-f]{2}(\1[0-9A-Fa-f]{2}){4}$/;

/**
 * Parses a 6-byte unicast MAC (`aa:bb:cc:dd:ee:ff`, also with `-`), returning the lower-case
 * colon form; throws FieldError for anything else, multicast or all-zero.
 */
export function parseMac(text: string): Mac {
  if (typeof text !== "string" || !MAC_RE.test(text)) {
    throw new FieldError(
      "expected a MAC address of 6 hex byte pairs separated by ':', e.g. 02:00:00:00:00:01",
    );
  }
  const mac = text.toLowerCase().replaceAll("-", ":");
  const bytes = hexBytes(mac);
  if (bytes.every((b) => b === 0)) {
    throw new FieldError("expected a unicast MAC, got the all-zero address");
  }
  if (bytes[0] & 1) {
    throw new FieldError(
      "expected a unicast MAC, got a multicast one (bit 0 of the first byte is set)",
    );
  }
  return mac as Mac;
}

function hexBytes(mac: string): Uint8Array<ArrayBuffer> {
  return new Uint8Array(mac.split(":").map((h) => parseInt(h, 16)));
}

/** The 6 bytes of a MAC, for libkrun's `uint8_t mac[6]`. */
export function macBytes(mac: Mac): Uint8Array<ArrayBuffer> {
  return hexBytes(mac);
}

/** The MAC as a C array initialiser, e.g. `{0x02, 0x00, …}` (inspect's call text). */
export function macCText(mac: Mac): string {
  return `{${mac.split(":").map((b) => `0x${b}`).join(", ")}}`;
}

/** True when the MAC is locally administered (bit 1 of the first byte). */
export function isLocallyAdministered(mac: Mac): boolean {
  return (macBytes(mac)[0] & 2) !== 0;
}

/** A random MAC in QEMU's 52:54:00 range (NICs nerdbox makes itself, e.g. a private passt's). */
export function generateMac(): Mac {
  const b = crypto.getRandomValues(new Uint8Array(3));
  return parseMac(
    ["52", "54", "00", ...Array.from(b, (x) => x.toString(16).padStart(2, "0"))].join(":"),
  );
}
