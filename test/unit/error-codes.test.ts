/**
 * One list of error codes (core/errors.ts ERROR_CODES): the exit codes, the
 * peer-error mapping, the --help epilog and the operator docs all follow it.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, test } from 'vitest';
import { ERROR_CODES, SyncError } from '../../src/core/errors.js';
import { ExitCode, exitCodeFor, exitCodesEpilog } from '../../src/cli/exit-codes.js';
import { remoteError } from '../../src/net/connection.js';
import { MsgType } from '../../protocol/constants.js';
import { ProtocolError } from '../../protocol/errors.js';
import { expectMessage } from '../../protocol/messages.js';

describe('error codes', () => {
  test('every code has an exit code of its own (none falls to INTERNAL)', () => {
    for (const c of ERROR_CODES) expect(exitCodeFor(new SyncError(c, 'x')), c).not.toBe(ExitCode.INTERNAL);
  });

  test('every code is documented in docs/exit-codes.md', () => {
    const doc = readFileSync(new URL('../../docs/exit-codes.md', import.meta.url), 'utf8');
    for (const c of ERROR_CODES) expect(doc, c).toContain(`\`${c}\``);
  });

  test("a peer's error keeps its code, except ERR_LOCKED (the peer's own lock), ERR_PARTIAL (a client's summary) and codes we do not know", () => {
    for (const c of ERROR_CODES) expect(remoteError(c, 'm', 'server').code).toBe(c === 'ERR_LOCKED' || c === 'ERR_PARTIAL' ? 'ERR_REMOTE' : c);
    const e = remoteError('ERR_FROM_THE_FUTURE', 'm', 'server');
    expect(e.code).toBe('ERR_REMOTE');
    expect(e.details.remoteCode).toBe('ERR_FROM_THE_FUTURE');
  });

  test('the --help epilog lists every exit code but INTERNAL, as it did when written by hand', () => {
    expect(exitCodesEpilog()).toBe(
      'Exit codes: 0 ok, 2 usage, 3 bad input file/message, 4 verification failed, 5 I/O, 6 no space, 7 network, 8 denied, 9 journal, 10 verify: images differ, 11 image locked by another session, 12 push: some replicas failed, 129 hangup, 130 interrupted, 143 terminated. See docs/exit-codes.md.',
    );
  });

  test('a message of the wrong type is a ProtocolError naming what was expected', () => {
    const m = { type: MsgType.AuthOk, mac: new Uint8Array(32) } as const;
    expect(expectMessage(m, MsgType.AuthOk, 'authentication result')).toBe(m);
    let caught: unknown;
    try {
      expectMessage(m, MsgType.Ready, 'ready');
    } catch (e) {
      caught = e;
    }
    expect(caught).toBeInstanceOf(ProtocolError);
    expect((caught as ProtocolError).code).toBe('ERR_PROTOCOL');
    expect((caught as ProtocolError).message).toBe('expected ready');
  });
});
