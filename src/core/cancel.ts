/**
 * A stop request from the CLI's signal handler to the work in progress, so
 * that an in-place update stops where it keeps its progress (a checkpoint in
 * its journal) instead of dying between checkpoints. Work that can stop
 * registers a hook (a connection drops itself) or polls cancelReason()
 * between steps (a patch between delta ops). Nothing here does I/O.
 */

const hooks = new Set<(reason: Error) => void>();
let requested: Error | null = null;

/** Call `fn` when a stop is requested (at once if one already was); returns the unregistration. */
export function onCancel(fn: (reason: Error) => void): () => void {
  if (requested) {
    fn(requested);
    return () => undefined;
  }
  hooks.add(fn);
  return () => hooks.delete(fn);
}

/** Ask the work in progress to stop with `reason`; false when no work listens (it cannot stop early). */
export function requestCancel(reason: Error): boolean {
  if (requested) return false;
  requested = reason;
  const listening = [...hooks];
  hooks.clear();
  for (const h of listening) h(reason);
  return listening.length > 0;
}

/** The reason a stop was requested, or null. */
export function cancelReason(): Error | null {
  return requested;
}

let done = false;

/** The command's output is committed (renamed into place, or its journal's commit record written): a stop from here on loses nothing. */
export function markCommitted(): void {
  done = true;
}

/** Whether an output was committed (see markCommitted). */
export function committed(): boolean {
  return done;
}
