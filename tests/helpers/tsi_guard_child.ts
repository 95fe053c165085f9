/**
 * Test child: guards itself as the vmm child does (lib/vm/tsi_guard.ts), allowing ARGS[1..] as
 * ports, then tries to listen on each port in ARGS[0] (comma-separated, on 0.0.0.0 and ::) and
 * prints one JSON object: {cgroup, results: {"<port>/<family>": "ok" | error name}}.
 * Usage: deno run -A tsi_guard_child.ts STATE_DIR TRY_PORTS [ALLOWED_PORT…]
 */
import { guardTsiListeners } from "../../lib/vm/tsi_guard.ts";

const [stateDir, tryPorts, ...allowed] = Deno.args;
const cgroup = guardTsiListeners(stateDir, allowed.map(Number));
const results: Record<string, string> = {};
for (const p of tryPorts.split(",").map(Number)) {
  for (const hostname of ["0.0.0.0", "::"]) {
    try {
      const l = Deno.listen({ hostname, port: p });
      l.close();
      results[`${p}/${hostname}`] = "ok";
    } catch (e) {
      results[`${p}/${hostname}`] = (e as Error).name;
    }
  }
}
console.log(JSON.stringify({ cgroup, results }));
