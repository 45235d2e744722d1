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

/**
 * The ways an export is reached, as keys two spellings of it share at least
 * one of: the socket file after symbolic links, or each address its host
 * resolves to with the port; with the export name. A host that does not
 * resolve keeps its own name.
 */
async function reachKeys(a: NbdAddress): Promise<string[]> {
  const name = encodeURIComponent(a.exportName);
  if (a.socket !== undefined) {
    const { realpath } = await import('node:fs/promises');
    const real = await realpath(resolve(a.socket)).catch(() => resolve(a.socket!));
    return [`unix ${encodeURIComponent(real)} ${name}`];
  }
  const { lookup } = await import('node:dns/promises');
  const found = await lookup(a.host!, { all: true }).catch(() => []);
  const hosts = found.length > 0 ? found.map((r) => r.address) : [a.host!.toLowerCase()];
  return [...new Set(hosts.map((h) => `tcp ${h} ${a.port} ${name}`))].sort();
}

/** Whether two NBD URIs reach the same export (see findUnsettledJournal). Unparsable: not the same; an unresolvable host only by its own name. */
export async function sameExport(a: string, b: string): Promise<boolean> {
  let x: NbdAddress, y: NbdAddress;
  try {
    x = parseNbdUri(a);
    y = parseNbdUri(b);
  } catch {
    return false;
  }
  if (x.exportName !== y.exportName || (x.socket === undefined) !== (y.socket === undefined)) return false;
  if (x.socket === undefined && x.port !== y.port) return false;
  const [kx, ky] = await Promise.all([reachKeys(x), reachKeys(y)]);
  return kx.some((k) => ky.includes(k));
}

/**
 * The lock files an export's sessions also hold, one per way of reaching
 * it (reachKeys): two spellings of one export (`localhost` and
 * `127.0.0.1`, a link to its socket) share one, so two writers under two
 * names are refused before either has made a journal. Sorted: every
 * session takes them in the same order.
 */
export async function exportLockPaths(stateDir: string, uri: string): Promise<string[]> {
  const keys = await reachKeys(parseNbdUri(uri));
  return keys.map((k) => join(stateDir, `nbd-export-${Buffer.from(sha256(Buffer.from(`resync-nbd-export/1\0${k}`))).toString('hex').slice(0, 32)}.lock`));
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
