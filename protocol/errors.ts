/** Errors raised while decoding or sequencing protocol messages. */
import { SyncError } from '../src/core/errors.js';

/** The peer (or file) broke the message format. */
export class ProtocolError extends SyncError {
  constructor(message: string, details: Record<string, unknown> = {}, options?: ErrorOptions) {
    super('ERR_PROTOCOL', message, details, options);
  }
}

/** A well-formed message that is not allowed in the current state. */
export class UnexpectedMessageError extends SyncError {
  constructor(got: string, state: string, expected: readonly string[]) {
    super('ERR_UNEXPECTED_MESSAGE', `unexpected ${got} message in state ${state} (expected ${expected.join(' or ')})`, {
      got,
      state,
      expected,
    });
  }
}
