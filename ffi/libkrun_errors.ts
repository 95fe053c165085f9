/**
 * The two ways a libkrun call fails: KrunError (libkrun returned a negative errno) and
 * KrunArgumentError (the wrapper refused the arguments before they reached libkrun).
 */

const ERRNO_NAMES: Record<number, string> = {
  1: "EPERM",
  2: "ENOENT",
  3: "ESRCH",
  4: "EINTR",
  5: "EIO",
  6: "ENXIO",
  7: "E2BIG",
  9: "EBADF",
  11: "EAGAIN",
  12: "ENOMEM",
  13: "EACCES",
  14: "EFAULT",
  16: "EBUSY",
  17: "EEXIST",
  19: "ENODEV",
  20: "ENOTDIR",
  21: "EISDIR",
  22: "EINVAL",
  24: "EMFILE",
  28: "ENOSPC",
  36: "ENAMETOOLONG",
  38: "ENOSYS",
  95: "EOPNOTSUPP",
  98: "EADDRINUSE",
  111: "ECONNREFUSED",
};

/** The symbolic name of a (positive) errno, e.g. 22 → EINVAL. */
export function errnoName(errno: number): string {
  return ERRNO_NAMES[errno] ?? `errno ${errno}`;
}

/** A libkrun call returned a negative errno. */
export class KrunError extends Error {
  /** The C function, e.g. `krun_set_port_map`. */
  readonly call: string;
  /** The positive errno (22 for -22). */
  readonly errno: number;
  /** Its symbolic name (EINVAL). */
  readonly errnoName: string;
  /** The arguments as passed, by parameter name. */
  readonly args: Record<string, unknown>;
  constructor(call: string, ret: number, args: Record<string, unknown>) {
    const errno = -ret;
    const name = errnoName(errno);
    super(`${call}(${formatArgs(args)}) failed: ${name} (${ret})`);
    this.name = "KrunError";
    this.call = call;
    this.errno = errno;
    this.errnoName = name;
    this.args = args;
  }
}

/** The wrapper refused a call before it reached libkrun (it would crash or be misread). */
export class KrunArgumentError extends Error {
  /** The C function. */
  readonly call: string;
  /** The parameter at fault. */
  readonly param: string;
  constructor(call: string, param: string, message: string) {
    super(`${call}: ${param}: ${message}`);
    this.name = "KrunArgumentError";
    this.call = call;
    this.param = param;
  }
}

function formatArgs(args: Record<string, unknown>): string {
  return Object.entries(args).map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(", ");
}

/** `ret` if it is not negative, else a KrunError naming `call`, the errno and `args`. */
export function checkKrunResult(call: string, ret: number, args: Record<string, unknown>): number {
  if (ret < 0) throw new KrunError(call, ret, args);
  return ret;
}
