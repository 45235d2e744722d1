/**
 * Names of the temp files an output is written to before its rename, and
 * the removal of those a killed resync left. A SIGKILL or a power cut
 * leaves one the size of the image beside it, and nothing ever took it away.
 *
 * The name carries its maker: `.NAME.resync-HOST-PID-RAND.tmp`. One is
 * stale when HOST is this host and no process PID runs here; removed then,
 * when the next temp file for the same output is made. A live PID (the
 * maker, or another process that took its number) keeps it, as does another
 * host's (a shared directory), and a name of the older form with no maker
 * (`.NAME.resync-RAND.tmp`).
 */
import { readdir, unlink } from 'node:fs/promises';
import { hostname } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { randomBytes } from 'node:crypto';

/** This host as a name part: letters and digits only, so `-` separates the parts. */
const HOST = hostname().replace(/[^A-Za-z0-9]/g, '_').slice(0, 32) || 'host';

/** A new temp file's path for `finalPath`, beside it. */
export function tempPathFor(finalPath: string): string {
  return join(dirname(finalPath), `.${basename(finalPath)}.resync-${HOST}-${process.pid}-${randomBytes(4).toString('hex')}.tmp`);
}

/** Whether a process `pid` runs on this host (one of another user's counts: EPERM). */
function running(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code !== 'ESRCH';
  }
}

/**
 * Remove the temp files for `finalPath` that a resync on this host left
 * when it was killed; returns their paths. Never throws: a file that cannot
 * be listed or removed only stays.
 */
export async function removeStaleTemps(finalPath: string): Promise<string[]> {
  const dir = dirname(finalPath);
  const prefix = `.${basename(finalPath)}.resync-${HOST}-`;
  let names: string[];
  try {
    names = (await readdir(dir)).filter((n) => n.startsWith(prefix) && n.endsWith('.tmp'));
  } catch {
    return [];
  }
  const gone: string[] = [];
  for (const n of names) {
    const m = /^(\d+)-[0-9a-f]{8}\.tmp$/.exec(n.slice(prefix.length));
    if (!m || Number(m[1]) === process.pid || running(Number(m[1]))) continue;
    const p = join(dir, n);
    if (await unlink(p).then(() => true, () => false)) gone.push(p);
  }
  return gone;
}
