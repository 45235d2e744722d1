/** What this process holds open, from /proc/self/fd (Linux): for tests and the fuzz harness. */
import { readdirSync, readlinkSync } from 'node:fs';

/** Paths starting with `prefix` that this process has a descriptor of. */
export function heldUnder(prefix: string): string[] {
  return readdirSync('/proc/self/fd')
    .map((f) => {
      try {
        return readlinkSync(`/proc/self/fd/${f}`);
      } catch {
        return ''; // closed meanwhile (the descriptor readdir itself used, say)
      }
    })
    .filter((l) => l.startsWith(prefix));
}
