/**
 * The config.json `nerdbox spec` writes: a complete OCI runtime spec in the shape runc and runsc
 * write (root `rootfs`, the usual mounts, namespaces), with the command, cwd and netns asked for.
 */

/** What `spec` can change in the default. */
export interface SpecTemplateOptions {
  args: string[];
  cwd: string;
  /** A network namespace path to join (`--netns`). */
  netns?: string;
}

/** The default OCI runtime spec. */
export function defaultSpec(o: SpecTemplateOptions): Record<string, unknown> {
  return {
    ociVersion: "1.0.2",
    process: {
      terminal: false,
      user: { uid: 0, gid: 0 },
      args: o.args,
      env: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
      cwd: o.cwd,
      capabilities: Object.fromEntries(
        ["bounding", "effective", "permitted"].map((k) => [
          k,
          ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
        ]),
      ),
      rlimits: [{ type: "RLIMIT_NOFILE", hard: 1024, soft: 1024 }],
      noNewPrivileges: true,
    },
    root: { path: "rootfs", readonly: false },
    hostname: "nerdbox",
    mounts: [
      { destination: "/proc", type: "proc", source: "proc" },
      {
        destination: "/dev",
        type: "tmpfs",
        source: "tmpfs",
        options: ["nosuid", "strictatime", "mode=755", "size=65536k"],
      },
      {
        destination: "/dev/pts",
        type: "devpts",
        source: "devpts",
        options: ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"],
      },
      {
        destination: "/dev/shm",
        type: "tmpfs",
        source: "shm",
        options: ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
      },
      {
        destination: "/sys",
        type: "sysfs",
        source: "sysfs",
        options: ["nosuid", "noexec", "nodev", "ro"],
      },
    ],
    linux: {
      namespaces: [
        { type: "pid" },
        o.netns !== undefined ? { type: "network", path: o.netns } : { type: "network" },
        { type: "ipc" },
        { type: "uts" },
        { type: "mount" },
      ],
      maskedPaths: ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"],
      readonlyPaths: ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
    },
  };
}

/** `features` output: what this runtime understands (OCI runtime features JSON). */
export function featuresJson(version: string): Record<string, unknown> {
  return {
    ociVersionMin: "1.0.0",
    ociVersionMax: "1.0.2",
    hooks: [],
    mountOptions: [],
    linux: { namespaces: ["network", "pid", "ipc", "uts", "mount"] },
    annotations: {
      "io.containerd.nerdbox.version": version,
      "io.containerd.nerdbox.isolation": "microvm",
    },
  };
}
