/**
 * cgroup v2 `bind4`/`bind6` BPF programs through libc `syscall(SYS_bpf)`: a program that lets
 * bind() succeed only for port 0 (an ephemeral port, as a connect() needs) and an allowed list of
 * ports, attached to one cgroup directory. The instructions are assembled here (no compiler): load
 * `bpf_sock_addr.user_port`, compare it with each allowed port, return 1 (allow) or 0 (EPERM).
 */
import { cstr, errnoText, libc, ptrValue } from "./libc.ts";

const SYS_BPF = 321n; // x86_64
const BPF_PROG_LOAD = 5n;
const BPF_PROG_ATTACH = 8n;
const BPF_PROG_TYPE_CGROUP_SOCK_ADDR = 18;
/** Attach types of the two bind hooks. */
export const BPF_CGROUP_INET4_BIND = 8;
/** The IPv6 bind hook. */
export const BPF_CGROUP_INET6_BIND = 9;
/** `offsetof(struct bpf_sock_addr, user_port)` (network byte order in the low 16 bits). */
const USER_PORT_OFFSET = 24;

/** One eBPF instruction: opcode, dst/src registers, offset, immediate. */
function insn(code: number, dst: number, src: number, off: number, imm: number): Uint8Array {
  const b = new Uint8Array(8);
  const v = new DataView(b.buffer);
  v.setUint8(0, code);
  v.setUint8(1, (src << 4) | dst);
  v.setInt16(2, off, true);
  v.setInt32(4, imm, true);
  return b;
}

/** The program: allow bind() to port 0 and `ports`, refuse every other port. */
export function bindFilterProgram(ports: number[]): Uint8Array {
  const allowed = [0, ...new Set(ports)];
  const list: Uint8Array[] = [];
  const allowAt = 1 + allowed.length + 2;
  list.push(insn(0x61, 2, 1, USER_PORT_OFFSET, 0)); // r2 = *(u32 *)(r1 + user_port)
  allowed.forEach((p, i) => {
    const netOrder = ((p & 0xff) << 8) | (p >> 8); // htons, read back as a little-endian u32
    list.push(insn(0x15, 2, 0, allowAt - (1 + i) - 1, netOrder)); // if r2 == p goto allow
  });
  list.push(insn(0xb7, 0, 0, 0, 0), insn(0x95, 0, 0, 0, 0)); // r0 = 0; exit  (EPERM)
  list.push(insn(0xb7, 0, 0, 0, 1), insn(0x95, 0, 0, 0, 0)); // allow: r0 = 1; exit
  const out = new Uint8Array(list.length * 8);
  list.forEach((x, i) => out.set(x, i * 8));
  return out;
}

/** Loads the program for one attach type; returns its fd. */
function loadProgram(ports: number[], attachType: number): number {
  const prog = bindFilterProgram(ports);
  const license = new TextEncoder().encode("GPL\0");
  const attr = new Uint8Array(128);
  const v = new DataView(attr.buffer);
  v.setUint32(0, BPF_PROG_TYPE_CGROUP_SOCK_ADDR, true);
  v.setUint32(4, prog.length / 8, true);
  v.setBigUint64(8, ptrValue(prog), true);
  v.setBigUint64(16, ptrValue(license), true);
  attr.set(new TextEncoder().encode("nerdbox_tsi"), 48);
  v.setUint32(68, attachType, true);
  const fd = Number(libc().syscall(SYS_BPF, BPF_PROG_LOAD, attr, BigInt(attr.length)));
  if (fd < 0) throw new Error(`bpf(BPF_PROG_LOAD, bind filter): ${errnoText()}`);
  return fd;
}

/**
 * Attaches bind4 and bind6 filters allowing only port 0 and `ports` to the cgroup directory
 * `cgroupDir`: every process in it (and below) gets EPERM from bind() to any other port.
 */
export function attachBindFilter(cgroupDir: string, ports: number[]): void {
  const dirFd = libc().open(cstr(cgroupDir), 0o200000, /* O_DIRECTORY */ 0);
  if (dirFd < 0) throw new Error(`open(${cgroupDir}): ${errnoText()}`);
  try {
    for (const type of [BPF_CGROUP_INET4_BIND, BPF_CGROUP_INET6_BIND]) {
      const progFd = loadProgram(ports, type);
      try {
        const attr = new Uint8Array(32);
        const v = new DataView(attr.buffer);
        v.setUint32(0, dirFd, true);
        v.setUint32(4, progFd, true);
        v.setUint32(8, type, true);
        if (Number(libc().syscall(SYS_BPF, BPF_PROG_ATTACH, attr, BigInt(attr.length))) < 0) {
          throw new Error(`bpf(BPF_PROG_ATTACH, ${cgroupDir}): ${errnoText()}`);
        }
      } finally {
        libc().close(progFd); // the attachment holds the program
      }
    }
  } finally {
    libc().close(dirFd);
  }
}
