/**
 * DeltaMatcher.startAt: a scan that begins mid-image (a connection detached
 * from a shared delta scan, net/shared-scan.ts) emits ops for the image from
 * there on, so the ops one scan emitted up to an op boundary followed by a
 * new scan's from that boundary rebuild the target, whatever the boundary.
 */
import { randomBytes } from 'node:crypto';
import { describe, expect, test } from 'vitest';
import { DeltaMatcher } from '../../src/core/matcher.js';
import type { DeltaOp } from '../../src/core/ops.js';
import { applyDelta, signatureOf } from '../../src/core/whole.js';
import { ParamError } from '../../src/core/errors.js';

const KiB = 1024;
const BS = 2 * KiB;

const len = (op: DeltaOp): number => (op.kind === 'copy' ? op.length : op.data.length);

/** All ops of `target` from `start` on, pushed in 7 KiB pieces (literals copied out at once). */
function scan(basis: Uint8Array, target: Uint8Array, start: number): DeltaOp[] {
  const m = new DeltaMatcher(signatureOf(basis, { blockSize: BS }));
  if (start > 0) m.startAt(start);
  const ops: DeltaOp[] = [];
  const own = (list: DeltaOp[]): void => {
    for (const o of list) ops.push(o.kind === 'literal' ? { kind: 'literal', data: Uint8Array.from(o.data) } : o);
  };
  for (let p = start; p < target.length; p += 7 * KiB) own(m.push(target.subarray(p, Math.min(target.length, p + 7 * KiB))));
  own(m.end());
  return ops;
}

describe('DeltaMatcher.startAt', () => {
  test('ops up to any op boundary, then a new scan from there, rebuild the target', () => {
    const basis = Buffer.concat([randomBytes(60 * KiB), Buffer.alloc(10 * KiB), randomBytes(50 * KiB)]);
    const target = Buffer.from(basis);
    randomBytes(3000).copy(target, 5 * KiB + 17);
    randomBytes(9000).copy(target, 40 * KiB);
    basis.copy(target, 90 * KiB, 20 * KiB, 30 * KiB); // moved data
    const whole = scan(basis, target, 0);
    expect(Buffer.from(applyDelta(basis, whole, target.length)).equals(target)).toBe(true);
    let cut = 0;
    let checked = 0;
    for (let k = 0; k < whole.length; k++) {
      cut += len(whole[k]!);
      const rest = scan(basis, target, cut);
      expect(rest.reduce((n, o) => n + len(o), 0)).toBe(target.length - cut);
      const out = applyDelta(basis, [...whole.slice(0, k + 1), ...rest], target.length);
      expect(Buffer.from(out).equals(target), `cut after op ${k} at ${cut}`).toBe(true);
      checked++;
    }
    expect(checked).toBeGreaterThan(4);
  });

  test('a scan started at a block boundary copies the unchanged blocks in place', () => {
    const basis = randomBytes(40 * KiB);
    const target = Buffer.from(basis);
    randomBytes(100).copy(target, 30 * KiB);
    const rest = scan(basis, target, 8 * KiB);
    expect(rest[0]).toEqual({ kind: 'copy', offset: 8 * KiB, length: 22 * KiB });
  });

  test('only before any input, at a position', () => {
    const m = new DeltaMatcher(signatureOf(randomBytes(8 * KiB), { blockSize: BS }));
    expect(() => m.startAt(-1)).toThrow(ParamError);
    m.push(randomBytes(3 * KiB));
    expect(() => m.startAt(4 * KiB)).toThrow(ParamError);
  });
});
