/** Where an NBD export's undo journal lives (io/nbd/undo.ts), and the readers' refusal while one exists: apart so the CLI and the image opener need not load the journal code. */
// Not node:crypto: the CLI names this path on an interruption, and `resync --version` loads no crypto.
import { sha256 } from '@noble/hashes/sha2.js';
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { JournalError } from '../errors.js';
import { parseNbdUri } from './uri.js';

/**
 * The export's identity as a normalized URI: the host in lower case with
 * its port spelled out, or the socket's absolute path, and the export name.
 * Two spellings of one export (`nbd://H/x` and `nbd://h:10809/x`) share a
 * journal; `localhost` and `127.0.0.1` do not (give the same URI each time).
 */
export function nbdIdentity(uri: string): string {
  const a = parseNbdUri(uri);
  const name = encodeURIComponent(a.exportName);
  if (a.socket !== undefined) return `nbd+unix:///${name}?socket=${encodeURIComponent(resolve(a.socket))}`;
  const host = a.host!.toLowerCase();
  return `nbd://${host.includes(':') ? `[${host}]` : host}:${a.port}/${name}`;
}

/** Where the undo journal of the export at `uri` lives in `stateDir`. */
export function nbdJournalPath(stateDir: string, uri: string): string {
  const h = Buffer.from(sha256(Buffer.from(`resync-nbd-undo/1\0${nbdIdentity(uri)}`))).toString('hex');
  return join(stateDir, `nbd-undo-${h.slice(0, 32)}.resync-journal`);
}

/** Refuse to read an export that a killed pull or patch left under its journal. */
export function refuseUnsettledExport(uri: string, stateDir: string): void {
  const path = nbdJournalPath(stateDir, uri);
  if (!existsSync(path)) return;
  throw new JournalError(
    `the NBD export ${uri} has an unfinished update (its undo journal ${path}: a pull or patch into it is running, or was killed): run that pull or patch again, or 'resync recover ${uri}' to roll it back`,
    { export: uri, journal: path },
  );
}
