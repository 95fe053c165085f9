/** DHCP server replies for tests that drive the guest's DHCP code (guest/dhcp.ts) directly. */
import { encodeDhcp } from "../../guest/dhcp.ts";

/** An encoded server reply (op 2) from 10.0.2.2 offering 10.0.2.15, carrying `options` in order. */
export function serverReply(options: [number, Uint8Array][], xid = 1): Uint8Array {
  return encodeDhcp({
    op: 2,
    xid,
    secs: 0,
    broadcast: false,
    ciaddr: new Uint8Array(4),
    yiaddr: Uint8Array.of(10, 0, 2, 15),
    siaddr: Uint8Array.of(10, 0, 2, 2),
    chaddr: new Uint8Array(16),
    options: new Map(options),
  });
}
