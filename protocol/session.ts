/**
 * The session state machine, sans I/O: which message may come next from which
 * side. Both peers run it over every message sent and received, so a message
 * out of order is refused at once with ERR_UNEXPECTED_MESSAGE.
 *
 *   Hello(C) Challenge(S) Auth(C) AuthOk(S) Open(C) Ready(S)
 *   (after SigHeader with regionBlocks > 0: RegionSums* from the signature side,
 *    then NeedRegions from the delta side, before the SigBlocks)
 *   push:  SigHeader SigBlocks* SigEnd (S)   DeltaHeader (Copy|Literal)* DeltaEnd (C)   Result(S)
 *   pull:  SigHeader SigBlocks* SigEnd (C)   DeltaHeader (Copy|Literal)* DeltaEnd (S)   Result(C)
 *   verify: SigHeader SigBlocks* SigEnd (S)  Result(C)
 *   recover: Open(C) Recovered(S) (no Ready: the server settles the volume's journal and answers)
 * Among the delta ops the delta side may send SubNeed; the signature side
 * answers each with one SubSums, and all are answered before DeltaEnd.
 * Error (either side) ends the session from any state.
 */
import { MsgType } from './constants.js';
import { messageName } from './codec.js';
import { UnexpectedMessageError } from './errors.js';
import type { OpenMsg } from './messages.js';

/** Which end of the connection. */
export type Side = 'client' | 'server';

/** Session states. */
export type SessionState =
  | 'hello'
  | 'challenge'
  | 'auth'
  | 'authok'
  | 'open'
  | 'ready'
  | 'sig-header'
  | 'regions'
  | 'sig-blocks'
  | 'delta-header'
  | 'delta-ops'
  | 'result'
  | 'recovered'
  | 'done'
  | 'failed';

type Mode = OpenMsg['mode'];

/** Tracks the protocol position of one session. Pure. */
export class SessionMachine {
  private st: SessionState = 'hello';
  private mode: Mode | null = null;
  /** SubNeeds not answered yet. */
  private subsOut = 0;

  /** Current state. */
  get state(): SessionState {
    return this.st;
  }

  /** The mode chosen by the Open message. */
  get sessionMode(): Mode | null {
    return this.mode;
  }

  /** True once the session ended normally. */
  get done(): boolean {
    return this.st === 'done';
  }

  /**
   * Advance over a message of `type` sent by `from`, or throw
   * UnexpectedMessageError. `mode` is required for Open.
   */
  step(from: Side, type: number, mode?: Mode, twoLevel = false): SessionState {
    if (type === MsgType.Error) {
      this.st = 'failed';
      return this.st;
    }
    // The long runs (delta ops, block sums) stay in their state: checked without building the allowed list.
    if (this.st === 'delta-ops' && (type === MsgType.Copy || type === MsgType.Literal || type === MsgType.LiteralZ || type === MsgType.LiteralZstd) && from === (this.mode === 'pull' ? 'server' : 'client')) return this.st;
    if (this.st === 'sig-blocks' && type === MsgType.SigBlocks && from === (this.mode === 'pull' ? 'client' : 'server')) return this.st;
    const want = this.expected();
    const ok = want.some(([side, t]) => side === from && t === type);
    if (!ok) {
      throw new UnexpectedMessageError(
        `${messageName(type)} from ${from}`,
        this.st,
        want.map(([s, t]) => `${messageName(t)} from ${s}`),
      );
    }
    this.st = this.after(type, mode);
    if (type === MsgType.SigHeader && twoLevel) this.st = 'regions';
    return this.st;
  }

  /** (side, type) pairs allowed next. */
  expected(): [Side, number][] {
    const sigFrom: Side = this.mode === 'pull' ? 'client' : 'server';
    const deltaFrom: Side = this.mode === 'pull' ? 'server' : 'client';
    const resultFrom: Side = this.mode === 'push' ? 'server' : 'client';
    switch (this.st) {
      case 'hello':
        return [['client', MsgType.Hello]];
      case 'challenge':
        return [['server', MsgType.Challenge]];
      case 'auth':
        return [['client', MsgType.Auth]];
      case 'authok':
        return [['server', MsgType.AuthOk]];
      case 'open':
        return [['client', MsgType.Open]];
      case 'ready':
        return [['server', MsgType.Ready]];
      case 'recovered':
        return [['server', MsgType.Recovered]];
      case 'sig-header':
        return [[sigFrom, MsgType.SigHeader]];
      case 'regions':
        return [
          [sigFrom, MsgType.RegionSums],
          [deltaFrom, MsgType.NeedRegions],
        ];
      case 'sig-blocks':
        return [
          [sigFrom, MsgType.SigBlocks],
          [sigFrom, MsgType.SigEnd],
        ];
      case 'delta-header':
        return [[deltaFrom, MsgType.DeltaHeader]];
      case 'delta-ops':
        return [
          [deltaFrom, MsgType.Copy],
          [deltaFrom, MsgType.Literal],
          [deltaFrom, MsgType.LiteralZ],
          [deltaFrom, MsgType.LiteralZstd],
          [deltaFrom, MsgType.SubNeed],
          ...(this.subsOut > 0 ? [[sigFrom, MsgType.SubSums] as [Side, number]] : [[deltaFrom, MsgType.DeltaEnd] as [Side, number]]),
        ];
      case 'result':
        return [[resultFrom, MsgType.Result]];
      case 'done':
      case 'failed':
        return [];
    }
  }

  private after(type: number, mode?: Mode): SessionState {
    switch (type) {
      case MsgType.Hello:
        return 'challenge';
      case MsgType.Challenge:
        return 'auth';
      case MsgType.Auth:
        return 'authok';
      case MsgType.AuthOk:
        return 'open';
      case MsgType.Open:
        this.mode = mode ?? 'push';
        return this.mode === 'recover' ? 'recovered' : 'ready';
      case MsgType.Ready:
        return 'sig-header';
      case MsgType.SigHeader:
        return 'sig-blocks';
      case MsgType.SigBlocks:
        return 'sig-blocks';
      case MsgType.RegionSums:
        return 'regions';
      case MsgType.NeedRegions:
        return 'sig-blocks';
      case MsgType.SigEnd:
        return this.mode === 'verify' ? 'result' : 'delta-header';
      case MsgType.DeltaHeader:
        return 'delta-ops';
      case MsgType.Copy:
      case MsgType.Literal:
      case MsgType.LiteralZ:
      case MsgType.LiteralZstd:
        return 'delta-ops';
      case MsgType.SubNeed:
        this.subsOut++;
        return 'delta-ops';
      case MsgType.SubSums:
        this.subsOut--;
        return 'delta-ops';
      case MsgType.DeltaEnd:
        return 'result';
      case MsgType.Result:
      case MsgType.Recovered:
        return 'done';
      default:
        return this.st;
    }
  }
}
