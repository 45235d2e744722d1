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

const killAt = process.env.RESYNC_KILL_AT ?? '';
const killHits = new Map<string, number>();

/**
 * A named moment where tests kill the process: with RESYNC_KILL_AT=label (or
 * label:N for its Nth time) the process SIGKILLs itself there, so a crash at
 * exactly that point (between the lock and the journal, in the middle of
 * settling a journal) can be tested with a real process; RESYNC_KILL_AT=label:N:SIGINT
 * sends that signal instead, once. Otherwise a no-op.
 */
export function killPoint(label: string): void {
  if (!killAt || !killAt.startsWith(label)) return;
  const [name, nth, signal] = killAt.split(':');
  if (name !== label) return;
  const n = (killHits.get(label) ?? 0) + 1;
  killHits.set(label, n);
  // label:N:SIGNAL sends that signal once instead (a Ctrl-C at exactly that point).
  if (signal) {
    if (n === Number(nth)) process.kill(process.pid, signal as NodeJS.Signals);
  } else if (n >= Number(nth ?? 1)) process.kill(process.pid, 'SIGKILL');
}
