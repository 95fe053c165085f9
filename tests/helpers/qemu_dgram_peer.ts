/**
 * Test peer (a fake provider, named as such): a unixgram "network" of one host that expects the
 * vfkit `VFKT` datagram first, then answers ARP requests for its address and ICMP echo requests,
 * one raw Ethernet frame per datagram (QEMU `-netdev dgram`). Records what it saw.
 */
import { UnixDgram } from "../../ffi/unix_dgram.ts";

/** What the peer observed. */
export interface DgramPeerLog {
  vfkitFrom?: string;
  /** The first datagram was exactly `VFKT`. */
  vfkitFirst: boolean;
  arpRequests: number;
  echoRequests: number;
  /** Source MACs of the frames seen. */
  macs: Set<string>;
}

function macText(b: Uint8Array): string {
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join(":");
}

function checksum(b: Uint8Array): number {
  let sum = 0;
  for (let i = 0; i < b.length; i += 2) sum += (b[i] << 8) + (b[i + 1] ?? 0);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

/** Starts the peer on `path`, answering as `ip` (dotted) with `mac`. */
export function startDgramPeer(path: string, ip: string, mac = "02:00:00:98:00:01") {
  const sock = UnixDgram.bind(path);
  const myMac = new Uint8Array(mac.split(":").map((h) => parseInt(h, 16)));
  const myIp = new Uint8Array(ip.split(".").map(Number));
  const log: DgramPeerLog = { vfkitFirst: false, arpRequests: 0, echoRequests: 0, macs: new Set() };
  let first = true;
  let peerPath: string | undefined;
  const loop = (async () => {
    while (true) {
      const d = await sock.recv();
      if (!d) return;
      if (first) {
        first = false;
        if (new TextDecoder().decode(d.data) === "VFKT") {
          log.vfkitFirst = true;
          log.vfkitFrom = d.from;
          peerPath = d.from;
          continue;
        }
      }
      const f = d.data;
      const send = (to: string, r: Uint8Array) => {
        try {
          sock.sendTo(to, r);
        } catch {
          // the VM side is gone
        }
      };
      if (f.length < 14) continue;
      log.macs.add(macText(f.subarray(6, 12)));
      const to = peerPath ?? d.from;
      const type = (f[12] << 8) | f[13];
      if (
        type === 0x0806 && f.length >= 42 && f[21] === 1 &&
        f.subarray(38, 42).every((b, i) => b === myIp[i])
      ) {
        log.arpRequests++;
        const r = new Uint8Array(42);
        r.set(f.subarray(6, 12), 0); // to the asker
        r.set(myMac, 6);
        r.set([0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 2], 12);
        r.set(myMac, 22);
        r.set(myIp, 28);
        r.set(f.subarray(22, 32), 32); // asker's MAC + IP
        send(to, r);
      } else if (type === 0x0800 && f.length >= 34 && f[23] === 1) {
        const ihl = (f[14] & 0x0f) * 4;
        const icmp = 14 + ihl;
        if (f[icmp] !== 8 || !f.subarray(30, 34).every((b, i) => b === myIp[i])) continue;
        log.echoRequests++;
        const r = f.slice();
        r.set(f.subarray(6, 12), 0);
        r.set(myMac, 6);
        r.set(f.subarray(30, 34), 26); // src = my IP
        r.set(f.subarray(26, 30), 30); // dst = asker
        r[22] = 64;
        r[24] = r[25] = 0;
        const hc = checksum(r.subarray(14, 14 + ihl));
        r[24] = hc >> 8;
        r[25] = hc & 0xff;
        r[icmp] = 0; // echo reply
        r[icmp + 2] = r[icmp + 3] = 0;
        const totalLen = (f[16] << 8) | f[17];
        const cc = checksum(r.subarray(icmp, 14 + totalLen));
        r[icmp + 2] = cc >> 8;
        r[icmp + 3] = cc & 0xff;
        send(to, r);
      }
    }
  })();
  return {
    path,
    log,
    async stop() {
      sock.close();
      await loop.catch(() => {});
    },
  };
}
