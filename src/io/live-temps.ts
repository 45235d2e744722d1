/**
 * Temp files being written right now, so that a process stopped by a signal
 * can remove them synchronously on its way out (removeLiveTempFiles). Apart
 * from io/output.ts so the CLI's signal handler costs nothing at start.
 */
import { unlinkSync } from 'node:fs';

/** Added to by io/output.ts when it creates a temp file, removed from when it is renamed or removed. */
export const liveTemps = new Set<string>();

/** Remove every temp file still being written (at exit on a signal); returns their paths. */
export function removeLiveTempFiles(): string[] {
  const gone = [...liveTemps];
  for (const p of gone) {
    try {
      unlinkSync(p);
    } catch {
      // already gone
    }
  }
  liveTemps.clear();
  return gone;
}
