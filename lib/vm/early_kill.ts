/**
 * A signal that arrives before the guest started the workload: SIGKILL and SIGTERM end the VM at
 * once (there is no workload yet to receive them, and waiting for the boot would keep a killed
 * task running for seconds); the VM then reports the status a killed workload would have.
 */

/** Signals that end a VM whose workload has not started yet. */
export const ENDS_BOOTING_VM: ReadonlySet<number> = new Set([9, 15]);

/** Whether `signo`, arriving before the workload started, ends the VM at once. */
export function endsBootingVm(signo: number): boolean {
  return ENDS_BOOTING_VM.has(signo);
}

/** The exit a VM ended by `signo` before its workload started reports (128+n, no error). */
export function earlyKillExit(signo: number): { code: number } {
  return { code: 128 + signo };
}
