/**
 * Typed errors. Every failure the engine can report is a SyncError with a stable
 * `code`; tests and the CLI's exit-code mapping depend on the code, never on text.
 */

/**
 * Every stable error code, grouped by what the operator should do about
 * them: the one list the ErrorCode type, the peer-error mapping
 * (net/connection.ts) and the CLI's exit codes (cli/exit-codes.ts, which must
 * map every one) derive from.
 */
export const ERROR_CODES = [
  'ERR_PARAM', // caller passed an impossible argument (a bug or bad flag)
  'ERR_BAD_MAGIC', // the input is not a resync file of the expected kind
  'ERR_VERSION', // a format or protocol version we do not speak
  'ERR_CORRUPT', // an unbelievable value inside otherwise well-framed input
  'ERR_UNEXPECTED_EOF', // input ended in the middle of something
  'ERR_TRAILING_DATA', // bytes after the end marker
  'ERR_LIMIT', // a length/count beyond the configured limit
  'ERR_COPY_OUT_OF_BOUNDS', // a delta copy reaches outside the basis
  'ERR_BASIS_MISMATCH', // the delta or signature belongs to another basis image
  'ERR_VERIFY_FAILED', // the rebuilt image does not hash to the source's hash
  'ERR_IO', // the operating system refused a read/write
  'ERR_NO_SPACE', // the target filesystem is full
  'ERR_PROTOCOL', // the peer broke the protocol
  'ERR_UNEXPECTED_MESSAGE', // a valid message in the wrong state
  'ERR_FRAME_TOO_LARGE', // a frame length beyond the limit
  'ERR_AUTH', // authentication failed or missing
  'ERR_PERMISSION', // the volume does not allow this operation
  'ERR_NOT_FOUND', // no such volume (only after authentication)
  'ERR_TIMEOUT', // the peer went quiet
  'ERR_CONNECTION', // the connection dropped or could not be made
  'ERR_BUSY', // the server refuses more sessions / the volume is locked
  'ERR_REMOTE', // the peer reported an error of its own
  'ERR_JOURNAL', // a resume journal that does not match the operation
  'ERR_LOCKED', // another session (another process) holds the image's lock
  'ERR_NBD', // an NBD server broke the protocol, refused the export or an option, or failed a request
  'ERR_NBD_TLS', // TLS with an NBD server could not be set up or verified (nbds://), or the server requires it (nbd://)
  'ERR_PARTIAL', // a push to several replicas: some were updated, others failed
  'ERR_INTERRUPTED', // stopped by a signal; resumable
] as const;

/** A stable error code. */
export type ErrorCode = (typeof ERROR_CODES)[number];

/** Base class of every error resync raises on purpose. */
export class SyncError extends Error {
  readonly code: ErrorCode;
  /** Structured details for logs and `--json` output. */
  readonly details: Readonly<Record<string, unknown>>;
  constructor(code: ErrorCode, message: string, details: Record<string, unknown> = {}, options?: ErrorOptions) {
    super(message, options);
    this.code = code;
    this.details = details;
    this.name = new.target.name;
  }
}

/** An impossible argument from the caller. */
export class ParamError extends SyncError {
  constructor(message: string, details: Record<string, unknown> = {}) {
    super('ERR_PARAM', message, details);
  }
}

/** Input ended while `what` still needed bytes. */
export class UnexpectedEofError extends SyncError {
  constructor(what: string, expected: number, available: number) {
    super('ERR_UNEXPECTED_EOF', `unexpected end of input reading ${what}: needed ${expected} byte(s), ${available} available`, {
      what,
      expected,
      available,
    });
  }
}

/** Malformed input: the framing was fine, a value inside it was not. */
export class CorruptInputError extends SyncError {
  constructor(message: string, details: Record<string, unknown> = {}, options?: ErrorOptions) {
    super('ERR_CORRUPT', message, details, options);
  }
}

/** A length or count beyond the configured limit, checked before allocating. */
export class LimitExceededError extends SyncError {
  constructor(what: string, value: number, limit: number) {
    super('ERR_LIMIT', `${what} ${value} exceeds the limit of ${limit}`, { what, value, limit });
  }
}

/** A delta copy that reaches outside the basis image. */
export class CopyOutOfBoundsError extends SyncError {
  constructor(offset: number, length: number, basisSize: number) {
    super('ERR_COPY_OUT_OF_BOUNDS', `copy of ${length} byte(s) at offset ${offset} reaches past the end of the ${basisSize}-byte basis`, {
      offset,
      length,
      basisSize,
    });
  }
}

/** The rebuilt image does not match the source's cryptographic hash or size. */
export class VerifyError extends SyncError {
  constructor(message: string, details: Record<string, unknown> = {}) {
    super('ERR_VERIFY_FAILED', message, details);
  }
}

/** The delta or signature was made for a different basis image. */
export class BasisMismatchError extends SyncError {
  constructor(message: string, details: Record<string, unknown> = {}) {
    super('ERR_BASIS_MISMATCH', message, details);
  }
}

/** True when `e` is one of ours (as opposed to a bug or a raw system error). */
export function isSyncError(e: unknown): e is SyncError {
  return e instanceof SyncError;
}
