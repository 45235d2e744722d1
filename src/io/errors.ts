/** Turn operating-system errors into typed SyncErrors with the path involved. */
import { SyncError } from '../core/errors.js';

/** Wrap a Node fs error (ENOENT, ENOSPC, EACCES, ...) for `path`, doing `what`. */
export function ioError(e: unknown, what: string, path: string): SyncError {
  if (e instanceof SyncError) return e;
  const err = e as NodeJS.ErrnoException;
  const code = err?.code ?? 'EUNKNOWN';
  if (code === 'ENOSPC' || code === 'EDQUOT' || code === 'EFBIG') {
    return new SyncError('ERR_NO_SPACE', `no space left while ${what} ${path} (${code})`, { path, errno: code }, { cause: e });
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
