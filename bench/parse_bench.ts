/**
 * Annotation parsing throughput: iterations per second of a typical two-network annotation set
 * (one iteration = one full parseAnnotations call on 6 annotations), and of its parts.
 */
import { parseAnnotations, parseNetworkValue } from "../lib/spec/annotations.ts";
import { formatNetworkValue } from "../lib/spec/format.ts";

const P = "io.containerd.nerdbox.";
/** A typical sandbox: a passt network with offloads, a gvproxy network, a container NIC, DNS. */
export const TYPICAL: Record<string, string> = {
  [`${P}network.0`]: "socket=/run/nerdbox/abc/passt.sock,mode=unixstream,mac=02:00:00:00:00:01," +
    "features=VIRTIO_NET_F_CSUM|VIRTIO_NET_F_GUEST_CSUM|VIRTIO_NET_F_GUEST_TSO4|" +
    "VIRTIO_NET_F_HOST_TSO4,addr=10.88.0.2/16,addr=fd00:88::2/64",
  [`${P}network.1`]: "socket=/tmp/gvisor.sock,mode=unixgram,mac=fa:43:25:5d:6f:b4,dhcp=true," +
    "vfkit=true",
  [`${P}ctr.network.0`]: "vmmac=02:00:00:00:00:01,ifname=eth%d,addr=10.88.0.3/16,gw=10.88.0.1",
  [`${P}ctr.dns`]: "nameserver=10.88.0.1,search=example.com,options=ndots:2",
  [`${P}resources.cpu`]: "2",
  [`${P}resources.memory`]: "1G",
  "io.kubernetes.cri.sandbox-id": "abc",
};

const first = parseAnnotations(TYPICAL);
if (first.errors.length > 0) {
  throw new Error(`benchmark input is invalid: ${first.errors[0].message}`);
}

Deno.bench(
  "parseAnnotations: typical 2-network set (annotation sets/s)",
  { baseline: true },
  () => {
    parseAnnotations(TYPICAL);
  },
);

Deno.bench("parseNetworkValue: one network value", () => {
  parseNetworkValue(TYPICAL[`${P}network.0`], `${P}network.0`, 0);
});

Deno.bench("formatNetworkValue + parseNetworkValue round trip", () => {
  const n = first.networks[0];
  parseNetworkValue(formatNetworkValue(n), `${P}network.0`, 0);
});
