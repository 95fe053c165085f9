/**
 * What the bridge/portmap/host-local plugins leave on the host after a correct DEL, and how
 * nerdbox puts it back: before its ADD nerdbox records which of these did not exist yet (marker
 * files in its state dir); when the last nerdbox attachment is gone it removes exactly those, and
 * only while nothing else uses them (a bridge with no ports, nat tables holding nothing but the
 * static CNI-HOSTPORT-* plumbing, no CNI masquerade rule left for ip_forward).
 */
import type { CniNetworkList } from "./cni_config.ts";
import { exists } from "../fs.ts";

const dec = new TextDecoder();

async function run(cmd: string, args: string[]): Promise<{ ok: boolean; out: string }> {
  try {
    const o = await new Deno.Command(cmd, {
      args,
      clearEnv: true,
      env: { PATH: "/usr/sbin:/usr/bin:/sbin:/bin" },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    return { ok: o.success, out: dec.decode(o.stdout) + dec.decode(o.stderr) };
  } catch (e) {
    return { ok: false, out: String(e) };
  }
}

function bridgesOf(list: CniNetworkList): string[] {
  return list.plugins.filter((p) => p.type === "bridge")
    .map((p) => typeof p.raw.bridge === "string" && p.raw.bridge ? p.raw.bridge : "cni0");
}

function ipamDirsOf(list: CniNetworkList): string[] {
  const dirs: string[] = [];
  for (const p of list.plugins) {
    const ipam = p.raw.ipam as Record<string, unknown> | undefined;
    if (p.ipamType !== "host-local" || !ipam) continue;
    const base = typeof ipam.dataDir === "string" && ipam.dataDir
      ? ipam.dataDir
      : "/var/lib/cni/networks";
    dirs.push(`${base}/${list.name}`);
  }
  return dirs;
}

const FORWARD = {
  ip_forward: "/proc/sys/net/ipv4/ip_forward",
  ip6_forward: "/proc/sys/net/ipv6/conf/all/forwarding",
} as const;

/** Whether the nftables table `<family> nat` exists; true when nft is missing (then nerdbox can
 * neither tell nor remove a table, so it never claims one). */
async function natTableExists(family: "ip" | "ip6"): Promise<boolean> {
  if (!(await run("nft", ["--version"])).ok) return true;
  return (await run("nft", ["list", "table", family, "nat"])).ok;
}

async function mark(dir: string, name: string, content = ""): Promise<void> {
  const path = `${dir}/${name}`;
  if (await exists(path)) return; // an earlier session's baseline is the true one
  await Deno.writeTextFile(path, content);
}

/**
 * Records, before an ADD of `list`, which host objects do not exist yet (bridges, nat tables,
 * CNI-HOSTPORT chains, host-local dirs) and whether forwarding is off. Call under the CNI lock.
 */
export async function recordHostBaseline(list: CniNetworkList, stateDir: string): Promise<void> {
  const dir = `${stateDir}/host`;
  await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
  for (const br of bridgesOf(list)) {
    if (!(await exists(`/sys/class/net/${br}`))) await mark(dir, `bridge.${br}`);
  }
  for (const [name, path] of Object.entries(FORWARD)) {
    const v = (await Deno.readTextFile(path).catch(() => "")).trim();
    if (v === "0") await mark(dir, name);
  }
  for (const fam of ["ip", "ip6"] as const) {
    if (!(await natTableExists(fam))) await mark(dir, `nat.${fam}`);
    else if (!(await hasHostportChains(fam))) await mark(dir, `hostport.${fam}`);
  }
  for (const d of ipamDirsOf(list)) {
    if (!(await exists(d))) await mark(dir, `ipam.${encodeURIComponent(d)}`);
  }
}

async function natSave(fam: "ip" | "ip6"): Promise<string[]> {
  const r = await run(fam === "ip" ? "iptables-save" : "ip6tables-save", ["-t", "nat"]);
  return r.ok ? r.out.split("\n") : [];
}

async function hasHostportChains(fam: "ip" | "ip6"): Promise<boolean> {
  return (await natSave(fam)).some((l) => l.startsWith(":CNI-HOSTPORT-"));
}

const BASE_CHAINS = new Set(["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"]);
const STATIC_CHAINS = new Set(["CNI-HOSTPORT-DNAT", "CNI-HOSTPORT-MASQ", "CNI-HOSTPORT-SETMARK"]);

/** True when the nat table holds nothing but base chains and portmap's static plumbing. */
function onlyStaticPlumbing(lines: string[]): boolean {
  for (const l of lines) {
    if (l.startsWith(":")) {
      const chain = l.slice(1).split(" ")[0];
      if (!BASE_CHAINS.has(chain) && !STATIC_CHAINS.has(chain)) return false;
    } else if (l.startsWith("-A ")) {
      const chain = l.split(" ")[1];
      if (chain === "CNI-HOSTPORT-MASQ" || chain === "CNI-HOSTPORT-SETMARK") continue;
      if (BASE_CHAINS.has(chain) && /-j CNI-HOSTPORT-(DNAT|MASQ)$/.test(l)) continue;
      return false;
    }
  }
  return true;
}

async function removeHostportChains(fam: "ip" | "ip6"): Promise<string[]> {
  const bin = fam === "ip" ? "iptables" : "ip6tables";
  const errors: string[] = [];
  const jumps: string[][] = [
    ["PREROUTING", "-m", "addrtype", "--dst-type", "LOCAL", "-j", "CNI-HOSTPORT-DNAT"],
    ["OUTPUT", "-m", "addrtype", "--dst-type", "LOCAL", "-j", "CNI-HOSTPORT-DNAT"],
    [
      "POSTROUTING",
      "-m",
      "comment",
      "--comment",
      "CNI portfwd requiring masquerade",
      "-j",
      "CNI-HOSTPORT-MASQ",
    ],
  ];
  for (const j of jumps) await run(bin, ["-w", "-t", "nat", "-D", ...j]);
  for (const c of STATIC_CHAINS) {
    await run(bin, ["-w", "-t", "nat", "-F", c]);
    const r = await run(bin, ["-w", "-t", "nat", "-X", c]);
    if (!r.ok && !/No chain|does not exist/i.test(r.out)) errors.push(`${bin} -X ${c}: ${r.out}`);
  }
  return errors;
}

/**
 * Removes what the markers say nerdbox introduced, where nothing else uses it any more; drops
 * each marker it settles. Call under the CNI lock when no nerdbox attachment is left. Returns
 * problems met (not thrown: teardown goes on).
 */
export async function cleanupHost(stateDir: string): Promise<string[]> {
  const dir = `${stateDir}/host`;
  const errors: string[] = [];
  const markers: string[] = [];
  try {
    for await (const e of Deno.readDir(dir)) markers.push(e.name);
  } catch {
    return errors;
  }
  const drop = (m: string) => Deno.remove(`${dir}/${m}`).catch(() => {});
  for (const m of markers.filter((m) => m.startsWith("bridge."))) {
    const br = m.slice("bridge.".length);
    if (!/^[A-Za-z0-9_.-]{1,15}$/.test(br)) {
      await drop(m);
      continue;
    }
    if (!(await exists(`/sys/class/net/${br}`))) {
      await drop(m);
      continue;
    }
    const ports = [...Deno.readDirSync(`/sys/class/net/${br}/brif`)].length;
    if (ports > 0) continue; // someone else's veth is on it: not ours to remove
    const r = await run("ip", ["link", "del", br]);
    if (r.ok) await drop(m);
    else errors.push(`ip link del ${br}: ${r.out.trim()}`);
  }
  let cniMasqLeft = false;
  for (const fam of ["ip", "ip6"] as const) {
    const lines = await natSave(fam);
    if (lines.some((l) => l.startsWith("-A POSTROUTING") && / -j CNI-(?!HOSTPORT)/.test(l))) {
      cniMasqLeft = true;
    }
    const dnatRules = lines.some((l) => l.startsWith("-A CNI-HOSTPORT-DNAT "));
    if (markers.includes(`nat.${fam}`)) {
      if (!(await natTableExists(fam))) await drop(`nat.${fam}`);
      else if (onlyStaticPlumbing(lines) && !dnatRules) {
        const r = await run("nft", ["delete", "table", fam, "nat"]);
        if (r.ok) await drop(`nat.${fam}`);
        else errors.push(`nft delete table ${fam} nat: ${r.out.trim()}`);
      }
    } else if (markers.includes(`hostport.${fam}`) && !dnatRules) {
      errors.push(...await removeHostportChains(fam));
      await drop(`hostport.${fam}`);
    }
  }
  for (const [name, path] of Object.entries(FORWARD)) {
    if (!markers.includes(name)) continue;
    if (cniMasqLeft) continue; // another CNI user's pods still need forwarding
    try {
      await Deno.writeTextFile(path, "0");
      await drop(name);
    } catch (e) {
      errors.push(`restore ${path}: ${(e as Error).message}`);
    }
  }
  for (const m of markers.filter((m) => m.startsWith("ipam."))) {
    const d = decodeURIComponent(m.slice("ipam.".length));
    try {
      const names = [...Deno.readDirSync(d)].map((e) => e.name);
      if (names.every((n) => n === "lock" || n.startsWith("last_reserved_ip"))) {
        await Deno.remove(d, { recursive: true });
        await drop(m);
      }
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) await drop(m);
      else errors.push(`${d}: ${(e as Error).message}`);
    }
  }
  return errors;
}
