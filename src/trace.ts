/**
 * Phase timestamps for performance work: with RESYNC_TRACE=1 in the
 * environment, each phase boundary of a transfer prints one line to stderr
 * (`trace <pid> <unix seconds> cpu <ms of CPU so far> <label>`), so the two ends of a push can be
 * laid on one time line. Otherwise a no-op.
 */
const on = Boolean(process.env.RESYNC_TRACE);

/** Print a phase boundary when RESYNC_TRACE is set. */
export function trace(label: string): void {
  if (!on) return;
  const cpu = process.cpuUsage();
  process.stderr.write(`trace ${process.pid} ${(Date.now() / 1000).toFixed(3)} cpu ${((cpu.user + cpu.system) / 1000).toFixed(0)}ms ${label}\n`);
}
