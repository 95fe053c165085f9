/**
 * Test helper: starts a CNI session (`startCniSession`) from argv
 * `ID CONF_DIR BIN_DIR [HOST_PORT:GUEST_PORT]`, prints `{"netnsPath","podIps"}` as one JSON line
 * and then waits to be signalled (SIGINT/SIGTERM tear down; SIGKILL leaves work for the GC).
 */
import { startCniSession } from "../../lib/net/cni_session.ts";

const [id, confDir, binDir, port] = Deno.args;
const ports = port
  ? [{
    hostPort: Number(port.split(":")[0]),
    guestPort: Number(port.split(":")[1]),
    protocol: "tcp" as const,
  }]
  : [];
const s = await startCniSession({ id, confDir, binDir, ports });
console.log(JSON.stringify({ netnsPath: s.netnsPath, podIps: s.podIps }));
setInterval(() => {}, 1000);
