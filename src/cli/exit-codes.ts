/** Exit codes (docs/exit-codes.md lists them for operators). Pure. */
import { isSyncError, type ErrorCode } from '../core/errors.js';

/** Process exit codes. */
export const ExitCode = {
  OK: 0,
  /** A bug: an error that is not one of ours. */
  INTERNAL: 1,
  /** Bad command line or parameters. */
  USAGE: 2,
  /** A signature, delta or message that is malformed, truncated or over a limit. */
  BAD_INPUT: 3,
  /** The rebuilt image failed verification, or the basis is not the one expected. */
  VERIFY: 4,
  /** Reading or writing a file failed. */
  IO: 5,
  /** The target filesystem is full. */
  NO_SPACE: 6,
  /** Network failure or protocol violation by the peer. */
  NETWORK: 7,
  /** Authentication or permission refused. */
  DENIED: 8,
  /** A resume journal does not fit the operation. */
  JOURNAL: 9,
  /** `verify`: the images differ (not an error). */
  DIFFERENT: 10,
  /** The image is in use by another resync session; nothing was changed. */
  LOCKED: 11,
  /** A push to several replicas updated some of them and failed for others. */
  PARTIAL: 12,
  /** Stopped by SIGHUP (its terminal went away); re-run to resume. */
  HANGUP: 129,
  /** Interrupted by SIGINT (Ctrl-C); re-run to resume. */
  INTERRUPTED: 130,
  /** Stopped by SIGTERM; re-run to resume. */
  TERMINATED: 143,
} as const;

const BY_CODE: Record<ErrorCode, number> = {
  ERR_PARAM: ExitCode.USAGE,
  ERR_BAD_MAGIC: ExitCode.BAD_INPUT,
  ERR_VERSION: ExitCode.BAD_INPUT,
  ERR_CORRUPT: ExitCode.BAD_INPUT,
  ERR_UNEXPECTED_EOF: ExitCode.BAD_INPUT,
  ERR_TRAILING_DATA: ExitCode.BAD_INPUT,
  ERR_LIMIT: ExitCode.BAD_INPUT,
  ERR_COPY_OUT_OF_BOUNDS: ExitCode.BAD_INPUT,
  ERR_BASIS_MISMATCH: ExitCode.VERIFY,
  ERR_VERIFY_FAILED: ExitCode.VERIFY,
  ERR_IO: ExitCode.IO,
  ERR_NO_SPACE: ExitCode.NO_SPACE,
  ERR_PROTOCOL: ExitCode.NETWORK,
  ERR_UNEXPECTED_MESSAGE: ExitCode.BAD_INPUT,
  ERR_FRAME_TOO_LARGE: ExitCode.BAD_INPUT,
  ERR_TIMEOUT: ExitCode.NETWORK,
  ERR_CONNECTION: ExitCode.NETWORK,
  ERR_BUSY: ExitCode.NETWORK,
  ERR_REMOTE: ExitCode.NETWORK,
  ERR_NBD: ExitCode.NETWORK,
  ERR_AUTH: ExitCode.DENIED,
  ERR_PERMISSION: ExitCode.DENIED,
  ERR_NOT_FOUND: ExitCode.DENIED,
  ERR_NBD_TLS: ExitCode.DENIED,
  ERR_JOURNAL: ExitCode.JOURNAL,
  ERR_LOCKED: ExitCode.LOCKED,
  ERR_PARTIAL: ExitCode.PARTIAL,
  ERR_INTERRUPTED: ExitCode.INTERRUPTED,
};

/** How --help's epilog names each exit code (INTERNAL, a bug, goes unnamed). */
const SUMMARY: Record<keyof typeof ExitCode, string | null> = {
  OK: 'ok',
  INTERNAL: null,
  USAGE: 'usage',
  BAD_INPUT: 'bad input file/message',
  VERIFY: 'verification failed',
  IO: 'I/O',
  NO_SPACE: 'no space',
  NETWORK: 'network',
  DENIED: 'denied',
  JOURNAL: 'journal',
  DIFFERENT: 'verify: images differ',
  LOCKED: 'image locked by another session',
  PARTIAL: 'push: some replicas failed',
  HANGUP: 'hangup',
  INTERRUPTED: 'interrupted',
  TERMINATED: 'terminated',
};

/** The exit codes in one line, for the CLI's --help epilog. */
export function exitCodesEpilog(): string {
  const named = (Object.keys(ExitCode) as (keyof typeof ExitCode)[]).filter((k) => SUMMARY[k] !== null);
  return `Exit codes: ${named.map((k) => `${ExitCode[k]} ${SUMMARY[k]}`).join(', ')}. See docs/exit-codes.md.`;
}

/** Exit code for an error. */
export function exitCodeFor(e: unknown): number {
  return isSyncError(e) ? (BY_CODE[e.code] ?? ExitCode.INTERNAL) : ExitCode.INTERNAL;
}
