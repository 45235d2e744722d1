import { describe, expect, test } from 'vitest';
import { MsgType } from '../../protocol/constants.js';
import { messageName } from '../../protocol/codec.js';
import { SessionMachine, type Side } from '../../protocol/session.js';
import type { OpenMsg } from '../../protocol/messages.js';
import { SyncError } from '../../src/core/errors.js';

type Mode = OpenMsg['mode'];
/** Who sends, the message type, and for SigHeader whether the signature is two-level (regionBlocks > 0). */
type Step = [Side, number, boolean?];

const C: Side = 'client';
const S: Side = 'server';
const ALL_TYPES = Object.values(MsgType);

const HANDSHAKE: Step[] = [
  [C, MsgType.Hello],
  [S, MsgType.Challenge],
  [C, MsgType.Auth],
  [S, MsgType.AuthOk],
  [C, MsgType.Open],
  [S, MsgType.Ready],
];

function sig(from: Side, chunks: number): Step[] {
  return [[from, MsgType.SigHeader], ...Array.from({ length: chunks }, (): Step => [from, MsgType.SigBlocks]), [from, MsgType.SigEnd]];
}

/** A two-level signature: region hashes from `from`, the region bitmap from the other side, then block sums. */
function sig2(from: Side, regionMsgs: number, chunks: number): Step[] {
  const other: Side = from === C ? S : C;
  return [
    [from, MsgType.SigHeader, true],
    ...Array.from({ length: regionMsgs }, (): Step => [from, MsgType.RegionSums]),
    [other, MsgType.NeedRegions],
    ...Array.from({ length: chunks }, (): Step => [from, MsgType.SigBlocks]),
    [from, MsgType.SigEnd],
  ];
}

function delta(from: Side, ops: number[]): Step[] {
  return [[from, MsgType.DeltaHeader], ...ops.map((t): Step => [from, t]), [from, MsgType.DeltaEnd]];
}

/** The legal message sequence of a whole session; `twoLevel` gives the number of RegionSums messages. */
function legal(mode: Mode, chunks = 2, ops: number[] = [MsgType.Copy, MsgType.Literal, MsgType.Copy], twoLevel?: number): Step[] {
  const sigFrom: Side = mode === 'pull' ? C : S;
  const signature = twoLevel === undefined ? sig(sigFrom, chunks) : sig2(sigFrom, twoLevel, chunks);
  switch (mode) {
    case 'push':
      return [...HANDSHAKE, ...signature, ...delta(C, ops), [S, MsgType.Result]];
    case 'pull':
      return [...HANDSHAKE, ...signature, ...delta(S, ops), [C, MsgType.Result]];
    case 'verify':
      return [...HANDSHAKE, ...signature, [C, MsgType.Result]];
    case 'recover':
      // No Ready, no signature: the server settles the volume and answers.
      return [...HANDSHAKE.slice(0, -1), [S, MsgType.Recovered]];
  }
}

/** A machine advanced over `steps` (Open carries `mode`). */
function run(mode: Mode, steps: readonly Step[]): SessionMachine {
  const m = new SessionMachine();
  for (const [from, type, twoLevel] of steps) m.step(from, type, type === MsgType.Open ? mode : undefined, twoLevel ?? false);
  return m;
}

function stepError(m: SessionMachine, from: Side, type: number, mode?: Mode): SyncError {
  try {
    m.step(from, type, mode);
  } catch (e) {
    expect(e).toBeInstanceOf(SyncError);
    return e as SyncError;
  }
  throw new Error(`${messageName(type)} from ${from} was accepted in state ${m.state}`);
}

const MODES: Mode[] = ['push', 'pull', 'verify'];

describe('legal sessions', () => {
  test.each(MODES)('%s: the full sequence ends in done', (mode) => {
    const m = run(mode, legal(mode));
    expect(m.state).toBe('done');
    expect(m.done).toBe(true);
    expect(m.sessionMode).toBe(mode);
  });

  test.each(MODES)('%s: no signature chunks (empty image) is legal', (mode) => {
    expect(run(mode, legal(mode, 0, [])).done).toBe(true);
  });

  test.each(['push', 'pull'] as const)('%s: many chunks and ops in any mix of copy, literal and compressed literal', (mode) => {
    const kinds = [MsgType.Literal, MsgType.Copy, MsgType.LiteralZ, MsgType.Copy, MsgType.LiteralZstd];
    const ops = Array.from({ length: 100 }, (_, i) => kinds[i % kinds.length]!);
    expect(run(mode, legal(mode, 50, ops)).done).toBe(true);
  });

  test.each(MODES)('%s: a two-level signature (region hashes, bitmap, then block sums) is legal', (mode) => {
    expect(run(mode, legal(mode, 3, [MsgType.Copy], 2)).done).toBe(true);
    // nothing differs: no block sums at all
    expect(run(mode, legal(mode, 0, [MsgType.Copy], 1)).done).toBe(true);
  });

  test('two-level: the states and who may speak', () => {
    const m = run('push', [...HANDSHAKE, [S, MsgType.SigHeader, true]]);
    expect(m.state).toBe('regions');
    expect(m.expected()).toEqual([
      [S, MsgType.RegionSums],
      [C, MsgType.NeedRegions],
    ]);
    expect(m.step(S, MsgType.RegionSums)).toBe('regions');
    expect(m.step(C, MsgType.NeedRegions)).toBe('sig-blocks');
    const pull = run('pull', [...HANDSHAKE, [C, MsgType.SigHeader, true]]);
    expect(pull.expected()).toEqual([
      [C, MsgType.RegionSums],
      [S, MsgType.NeedRegions],
    ]);
  });

  test('the states along a push', () => {
    const m = new SessionMachine();
    const states = legal('push', 1, [MsgType.Copy]).map(([from, type]) => m.step(from, type, type === MsgType.Open ? 'push' : undefined));
    expect(states).toEqual([
      'challenge',
      'auth',
      'authok',
      'open',
      'ready',
      'sig-header',
      'sig-blocks',
      'sig-blocks',
      'delta-header',
      'delta-ops',
      'delta-ops',
      'result',
      'done',
    ]);
  });

  test('a fresh machine expects a Hello from the client', () => {
    const m = new SessionMachine();
    expect(m.state).toBe('hello');
    expect(m.sessionMode).toBeNull();
    expect(m.expected()).toEqual([[C, MsgType.Hello]]);
  });

  test('signature and delta directions follow the mode', () => {
    const at = (mode: Mode, n: number): SessionMachine => run(mode, legal(mode).slice(0, n));
    const afterReady = HANDSHAKE.length;
    expect(at('push', afterReady).expected()).toEqual([[S, MsgType.SigHeader]]);
    expect(at('pull', afterReady).expected()).toEqual([[C, MsgType.SigHeader]]);
    expect(at('verify', afterReady).expected()).toEqual([[S, MsgType.SigHeader]]);
    const afterSig = afterReady + 4;
    expect(at('push', afterSig).expected()).toEqual([[C, MsgType.DeltaHeader]]);
    expect(at('pull', afterSig).expected()).toEqual([[S, MsgType.DeltaHeader]]);
    expect(at('verify', afterSig).expected()).toEqual([[C, MsgType.Result]]);
  });
});

describe('out-of-order messages throw ERR_UNEXPECTED_MESSAGE', () => {
  test.each(MODES.flatMap((m) => [[m, 'one-level'] as const, [m, 'two-level'] as const]))('%s, %s signature: at every position, every message but the expected ones is refused', (mode, kind) => {
    const seq = legal(mode, 1, [MsgType.Copy, MsgType.Literal, MsgType.LiteralZ], kind === 'two-level' ? 2 : undefined);
    for (let i = 0; i <= seq.length; i++) {
      const allowed = run(mode, seq.slice(0, i)).expected();
      for (const from of [C, S]) {
        for (const type of ALL_TYPES) {
          if (type === MsgType.Error) continue;
          if (allowed.some(([s, t]) => s === from && t === type)) continue;
          const m = run(mode, seq.slice(0, i));
          const before = m.state;
          const e = stepError(m, from, type, type === MsgType.Open ? mode : undefined);
          expect(e.code).toBe('ERR_UNEXPECTED_MESSAGE');
          expect(m.state).toBe(before);
        }
      }
    }
  });

  test('the error names what came, the state and what was expected', () => {
    const m = run('push', HANDSHAKE.slice(0, 2));
    const e = stepError(m, C, MsgType.Open, 'push');
    expect(e.details).toEqual({ got: 'Open from client', state: 'auth', expected: ['Auth from client'] });
    expect(e.message).toBe('unexpected Open from client message in state auth (expected Auth from client)');
  });

  test('Open before authentication is refused', () => {
    expect(stepError(new SessionMachine(), C, MsgType.Open, 'pull').code).toBe('ERR_UNEXPECTED_MESSAGE');
    expect(stepError(run('pull', HANDSHAKE.slice(0, 3)), C, MsgType.Open, 'pull').code).toBe('ERR_UNEXPECTED_MESSAGE');
  });

  test('the server cannot speak first, and the client cannot answer its own Hello', () => {
    expect(stepError(new SessionMachine(), S, MsgType.Challenge).code).toBe('ERR_UNEXPECTED_MESSAGE');
    expect(stepError(run('push', HANDSHAKE.slice(0, 1)), C, MsgType.Challenge).code).toBe('ERR_UNEXPECTED_MESSAGE');
    expect(stepError(run('push', HANDSHAKE.slice(0, 1)), C, MsgType.Hello).code).toBe('ERR_UNEXPECTED_MESSAGE');
  });

  test('a push client may not send the signature; a pull client may not send the delta', () => {
    expect(stepError(run('push', HANDSHAKE), C, MsgType.SigHeader).code).toBe('ERR_UNEXPECTED_MESSAGE');
    const pullAfterSig = [...HANDSHAKE, ...sig(C, 1)];
    expect(stepError(run('pull', pullAfterSig), C, MsgType.DeltaHeader).code).toBe('ERR_UNEXPECTED_MESSAGE');
  });

  test('verify has no delta', () => {
    const m = run('verify', [...HANDSHAKE, ...sig(S, 1)]);
    expect(stepError(m, C, MsgType.DeltaHeader).code).toBe('ERR_UNEXPECTED_MESSAGE');
    expect(stepError(m, S, MsgType.DeltaHeader).code).toBe('ERR_UNEXPECTED_MESSAGE');
  });

  test('two-level: no block sums before the bitmap, no region messages in a one-level signature or after the bitmap', () => {
    const twoLevel = run('push', [...HANDSHAKE, [S, MsgType.SigHeader, true], [S, MsgType.RegionSums]]);
    expect(stepError(twoLevel, S, MsgType.SigBlocks).code).toBe('ERR_UNEXPECTED_MESSAGE');
    expect(stepError(twoLevel, S, MsgType.SigEnd).code).toBe('ERR_UNEXPECTED_MESSAGE');
    expect(stepError(twoLevel, C, MsgType.RegionSums).code).toBe('ERR_UNEXPECTED_MESSAGE');
    expect(stepError(twoLevel, S, MsgType.NeedRegions).code).toBe('ERR_UNEXPECTED_MESSAGE');
    const oneLevel = run('push', [...HANDSHAKE, [S, MsgType.SigHeader, false]]);
    expect(stepError(oneLevel, S, MsgType.RegionSums).code).toBe('ERR_UNEXPECTED_MESSAGE');
    expect(stepError(oneLevel, C, MsgType.NeedRegions).code).toBe('ERR_UNEXPECTED_MESSAGE');
    const afterBitmap = run('push', [...HANDSHAKE, [S, MsgType.SigHeader, true], [C, MsgType.NeedRegions]]);
    expect(stepError(afterBitmap, S, MsgType.RegionSums).code).toBe('ERR_UNEXPECTED_MESSAGE');
    expect(stepError(afterBitmap, C, MsgType.NeedRegions).code).toBe('ERR_UNEXPECTED_MESSAGE');
  });

  test('ops outside a delta, and a delta end before its header, are refused', () => {
    const m = run('push', [...HANDSHAKE, ...sig(S, 0)]);
    expect(stepError(m, C, MsgType.Copy).code).toBe('ERR_UNEXPECTED_MESSAGE');
    expect(stepError(m, C, MsgType.Literal).code).toBe('ERR_UNEXPECTED_MESSAGE');
    expect(stepError(m, C, MsgType.LiteralZ).code).toBe('ERR_UNEXPECTED_MESSAGE');
    expect(stepError(m, C, MsgType.LiteralZstd).code).toBe('ERR_UNEXPECTED_MESSAGE');
    expect(stepError(m, C, MsgType.DeltaEnd).code).toBe('ERR_UNEXPECTED_MESSAGE');
  });

  test.each(['push', 'pull'] as const)('%s: sub-block sums come from the signature side, one per SubNeed, all before DeltaEnd', (mode) => {
    const sigFrom: Side = mode === 'pull' ? C : S;
    const deltaFrom: Side = mode === 'pull' ? S : C;
    const m = run(mode, [...HANDSHAKE, ...sig(sigFrom, 1), [deltaFrom, MsgType.DeltaHeader]]);
    // No answer without a question, and no question from the signature side.
    expect(stepError(m, sigFrom, MsgType.SubSums).code).toBe('ERR_UNEXPECTED_MESSAGE');
    expect(stepError(m, sigFrom, MsgType.SubNeed).code).toBe('ERR_UNEXPECTED_MESSAGE');
    m.step(deltaFrom, MsgType.SubNeed);
    m.step(deltaFrom, MsgType.Literal);
    m.step(deltaFrom, MsgType.SubNeed);
    m.step(sigFrom, MsgType.SubSums);
    // One still unanswered: the delta may not end.
    expect(stepError(m, deltaFrom, MsgType.DeltaEnd).code).toBe('ERR_UNEXPECTED_MESSAGE');
    m.step(deltaFrom, MsgType.Copy);
    m.step(sigFrom, MsgType.SubSums);
    expect(stepError(m, sigFrom, MsgType.SubSums).code).toBe('ERR_UNEXPECTED_MESSAGE');
    m.step(deltaFrom, MsgType.DeltaEnd);
    expect(m.state).toBe('result');
  });

  test('SubNeed before the delta header is refused', () => {
    const m = run('push', [...HANDSHAKE, ...sig(S, 1)]);
    expect(stepError(m, C, MsgType.SubNeed).code).toBe('ERR_UNEXPECTED_MESSAGE');
  });

  test.each(MODES)('%s: nothing is accepted after done', (mode) => {
    const m = run(mode, legal(mode));
    expect(m.expected()).toEqual([]);
    for (const from of [C, S]) for (const type of ALL_TYPES.filter((t) => t !== MsgType.Error)) expect(stepError(m, from, type).code).toBe('ERR_UNEXPECTED_MESSAGE');
  });
});

describe('recover (capability "recover")', () => {
  test('Open(recover) is answered by Recovered from the server, and the session is done', () => {
    const m = run('recover', legal('recover'));
    expect(m.done).toBe(true);
    expect(m.sessionMode).toBe('recover');
  });

  test('at every position, every message but the expected one is refused (a Ready or a signature after Open(recover) too)', () => {
    const seq = legal('recover');
    for (let i = 0; i <= seq.length; i++) {
      const allowed = run('recover', seq.slice(0, i)).expected();
      for (const from of [C, S]) {
        for (const type of ALL_TYPES) {
          if (type === MsgType.Error || allowed.some(([s, t]) => s === from && t === type)) continue;
          const m = run('recover', seq.slice(0, i));
          expect(stepError(m, from, type, type === MsgType.Open ? 'recover' : undefined).code).toBe('ERR_UNEXPECTED_MESSAGE');
        }
      }
    }
    const m = run('recover', seq.slice(0, -1));
    expect(stepError(m, S, MsgType.Ready).code).toBe('ERR_UNEXPECTED_MESSAGE');
  });

  test('Recovered is refused in a push, pull or verify session', () => {
    for (const mode of MODES) {
      const m = run(mode, HANDSHAKE);
      expect(stepError(m, S, MsgType.Recovered).code).toBe('ERR_UNEXPECTED_MESSAGE');
    }
  });
});

describe('Error messages', () => {
  test.each(MODES)('%s: an Error from either side ends the session in every state', (mode) => {
    const seq = legal(mode, 1, [MsgType.Literal], 1);
    for (let i = 0; i <= seq.length; i++) {
      for (const from of [C, S]) {
        const m = run(mode, seq.slice(0, i));
        expect(m.step(from, MsgType.Error)).toBe('failed');
        expect(m.done).toBe(false);
        expect(m.expected()).toEqual([]);
      }
    }
  });

  test('after an Error only another Error is accepted', () => {
    const m = run('push', HANDSHAKE);
    m.step(S, MsgType.Error);
    expect(stepError(m, S, MsgType.SigHeader).code).toBe('ERR_UNEXPECTED_MESSAGE');
    expect(stepError(m, C, MsgType.Open, 'push').code).toBe('ERR_UNEXPECTED_MESSAGE');
    expect(m.step(C, MsgType.Error)).toBe('failed');
  });
});
