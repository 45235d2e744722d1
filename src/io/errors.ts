/** Turn operating-system errors into typed SyncErrors with the path involved. */
import { SyncError } from '../core/errors.js';
import { existsSync } from 'node:fs';
import { dirname } from 'node:path';

/** Wrap a Node fs error (ENOENT, ENOSPC, EACCES, ...) for `path`, doing `what`. */
export function ioError(e: unknown, what: string, path: string): SyncError {
  if (e instanceof SyncError) return e;
  const err = e as NodeJS.ErrnoException;
  const code = err?.code ?? 'EUNKNOWN';
  if (code === 'EFBIG') {
    // Not a full disk: the file system's largest file, or the process's limit (ulimit -f).
    return new SyncError('ERR_NO_SPACE', `file too large: cannot ${what} ${path} (EFBIG: past the file system's largest file or the process's file-size limit, ulimit -f)`, { path, errno: code }, { cause: e });
  }
  if (code === 'ENOSPC' || code === 'EDQUOT') {
    return new SyncError('ERR_NO_SPACE', `no space left: cannot ${what} ${path} (${code})`, { path, errno: code }, { cause: e });
  }
  // A file made in a directory that is not there: name the directory, not a temp file's hidden name.
  if (code === 'ENOENT' && what === 'create' && !existsSync(dirname(path))) {
    return new SyncError('ERR_IO', `cannot create ${path}: the directory ${dirname(path)} does not exist`, { path, errno: code }, { cause: e });
  }
  const reason = code === 'ENOENT' ? 'no such file' : code === 'EACCES' || code === 'EPERM' ? 'permission denied' : code === 'EISDIR' ? 'is a directory' : (err?.message ?? String(e));
  return new SyncError('ERR_IO', `cannot ${what} ${path}: ${reason}`, { path, errno: code }, { cause: e });
}

/** An undo journal that is in the way, does not fit the operation, or is damaged (ERR_JOURNAL). */
export class JournalError extends SyncError {
  constructor(message: string, details: Record<string, unknown> = {}, options?: ErrorOptions) {
    super('ERR_JOURNAL', message, details, options);
  }
}
