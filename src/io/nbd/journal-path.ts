/** Where an NBD export's undo journal lives (io/nbd/undo.ts), and the readers' refusal while one exists: apart so the CLI and the image opener need not load the journal code. */
// Not node:crypto: the CLI names this path on an interruption, and `resync --version` loads no crypto.
import { sha256 } from '@noble/hashes/sha2.js';
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { JournalError } from '../errors.js';
import { parseNbdUri, type NbdAddress } from './uri.js';

/**
 * The export's identity as a normalized URI: the host in lower case with
 * its port spelled out, or the socket's absolute path, and the export name.
 * Two spellings of one export (`nbd://H/x` and `nbd://h:10809/x`) share a
 * journal file; other spellings (`localhost` and `127.0.0.1`) name other
 * files, and findUnsettledJournal looks through those for the same export.
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

/** An export's journal found in a state directory, and the export it names (under that spelling). */
export interface UnsettledJournal {
  path: string;
  /** The journal's own export identity (nbdIdentity form), when it was found under another spelling. */
  otherName?: string;
}

/**
 * The undo journal a killed pull or patch left for the export at `uri` in
 * `stateDir`: its own (same identity), or one made under another spelling
 * of the same export (`localhost` for `127.0.0.1`, a symbolic link to the
 * socket): same export name, and the same socket file or the same port on a
 * host address both names resolve to. Null when there is none.
 */
export async function findUnsettledJournal(uri: string, stateDir: string): Promise<UnsettledJournal | null> {
  const own = nbdJournalPath(stateDir, uri);
  if (existsSync(own)) return { path: own };
  // Loaded on use: the CLI imports this module at start for the journal's name.
  const { readdir } = await import('node:fs/promises');
  let names: string[];
  try {
    names = (await readdir(stateDir)).filter((n) => /^nbd-undo-[0-9a-f]{32}\.resync-journal$/.test(n));
  } catch {
    return null;
  }
  if (names.length === 0) return null;
  // Loaded only when some journal is pending: the usual read of an export does without.
  const { readJournal } = await import('../journal.js');
  for (const n of names) {
    const path = join(stateDir, n);
    const other = await readJournal(path).then((st) => st?.base.export, () => undefined);
    if (other !== undefined && (await sameExport(uri, other))) return { path, otherName: other };
  }
  return null;
}

/** Whether two NBD URIs reach the same export (see findUnsettledJournal). Unparsable or unresolvable: not the same. */
export async function sameExport(a: string, b: string): Promise<boolean> {
  let x: NbdAddress, y: NbdAddress;
  try {
    x = parseNbdUri(a);
    y = parseNbdUri(b);
  } catch {
    return false;
  }
  if (x.exportName !== y.exportName) return false;
  if (x.socket !== undefined || y.socket !== undefined) {
    if (x.socket === undefined || y.socket === undefined) return false;
    const { realpath } = await import('node:fs/promises');
    const real = (p: string) => realpath(resolve(p)).catch(() => resolve(p));
    return (await real(x.socket)) === (await real(y.socket));
  }
  if (x.port !== y.port) return false;
  const { lookup } = await import('node:dns/promises');
  const addrs = async (h: string) => new Set((await lookup(h, { all: true }).catch(() => [])).map((r) => r.address));
  const [ax, ay] = await Promise.all([addrs(x.host!), addrs(y.host!)]);
  for (const v of ax) if (ay.has(v)) return true;
  return false;
}

/** Refuse to read an export that a killed pull or patch left under its journal (under any spelling of its URI). */
export async function refuseUnsettledExport(uri: string, stateDir: string): Promise<void> {
  const found = await findUnsettledJournal(uri, stateDir);
  if (!found) return;
  const fix = found.otherName ?? uri;
  const as = found.otherName ? `, made for ${found.otherName}, the same export under another name` : '';
  throw new JournalError(
    `the NBD export ${uri} has an unfinished update (its undo journal ${found.path}${as}: a pull or patch into it is running, or was killed): run that pull or patch again, or 'resync recover ${fix}' to roll it back`,
    { export: uri, journal: found.path },
  );
}
