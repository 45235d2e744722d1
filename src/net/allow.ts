/**
 * `resync serve --stdio --allow DIR`: which image a client over ssh may open.
 * The client names a path (in the Open message's volume field); it is
 * resolved (symbolic links and `..` included) before anything is opened, and
 * must lie inside one of the allowed directories.
 */
import { realpath } from 'node:fs/promises';
import { basename, dirname, resolve, sep } from 'node:path';
import { SyncError } from '../core/errors.js';
import type { VolumeConfig } from './config.js';
import type { OpenMsg } from '../../protocol/messages.js';
import { isNbdUri } from '../io/nbd/uri.js';

/** The restriction a stdio server runs under. */
export interface StdioAccess {
  /** Real paths of the directories images may be in; null: any path this user can reach. */
  allow: string[] | null;
  /** Refuse pushes. */
  readOnly: boolean;
}

/** Resolve the --allow directories to real paths (each must exist and be a directory). */
export async function realAllowDirs(dirs: string[]): Promise<string[]> {
  const out: string[] = [];
  for (const d of dirs) {
    const r = await realpath(d).catch((e: NodeJS.ErrnoException) => {
      throw new SyncError('ERR_PARAM', `--allow ${d}: ${e.code === 'ENOENT' ? 'no such directory' : (e.code ?? e.message)}`);
    });
    out.push(r);
  }
  return out;
}

/** Whether `path` is inside one of the allowed directories (any path, without --allow). */
function allowed(access: StdioAccess, path: string): boolean {
  return !access.allow || access.allow.some((d) => path.startsWith(d.endsWith(sep) ? d : d + sep));
}

function outside(): SyncError {
  return new SyncError('ERR_PERMISSION', 'outside the directories this server allows (--allow); refused');
}

/** The volume a client's requested path names, or ERR_PERMISSION / ERR_NOT_FOUND before anything is opened (the caller prefixes the path to messages). */
export async function resolveRequested(requested: string, mode: OpenMsg['mode'], access: StdioAccess): Promise<VolumeConfig> {
  if (requested === '' || requested.includes('\0')) throw new SyncError('ERR_PARAM', 'the client named no image path');
  // The server opens only the NBD exports its operator configured as volumes; a stdio server has none.
  if (isNbdUri(requested)) throw new SyncError('ERR_PERMISSION', 'an NBD export cannot be named by the client; the server operator serves one as a volume (resync serve --volume NAME=nbd://...)');
  // Relative paths are taken from the first allowed directory (as rrsync does), else the login directory.
  const abs = resolve(access.allow?.[0] ?? process.cwd(), requested);
  let real: string;
  try {
    real = await realpath(abs);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw new SyncError('ERR_PERMISSION', `cannot resolve the path (${(e as NodeJS.ErrnoException).code ?? String(e)})`);
    // Not there yet (a first push creates it): its directory must be.
    const dir = await realpath(dirname(abs)).catch(() => null);
    // Refused as outside before "no such directory": that would tell what exists outside the allowed directories.
    if (dir === null) throw allowed(access, abs) ? new SyncError('ERR_NOT_FOUND', 'no such directory') : outside();
    real = resolve(dir, basename(abs));
  }
  if (!allowed(access, real)) throw outside();
  if ((mode === 'push' || mode === 'recover' || mode === 'dirty') && access.readOnly) throw new SyncError('ERR_PERMISSION', `this server is read-only (--read-only); a ${mode} is refused`);
  return { path: real, writable: !access.readOnly, inPlace: true };
}
