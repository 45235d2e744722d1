/**
 * Which sessions of a push to several may share a delta scan
 * (net/shared-scan.ts, sameSignature): only those whose signatures agree in
 * spec, seed, image hash and every block's weak sum and strong digest.
 */
import { randomBytes } from 'node:crypto';
import { describe, expect, test } from 'vitest';
import { signatureOf } from '../../src/core/whole.js';
import { sameSignature } from '../../src/net/shared-scan.js';
import type { ReceivedSignature } from '../../src/net/sender.js';

const KiB = 1024;
const seed = randomBytes(16);
const hash = randomBytes(32);

function received(basis: Uint8Array, opts: { seed?: Uint8Array; blockSize?: number; targetHash?: Buffer } = {}): ReceivedSignature {
  const sig = signatureOf(basis, { blockSize: opts.blockSize ?? 4 * KiB, seed: opts.seed ?? seed });
  return { sig, own: new Uint8Array(0), ownAt: () => new Uint8Array(0), targetHash: opts.targetHash ?? hash };
}

describe('sameSignature', () => {
  const basis = randomBytes(100 * KiB + 123);

  test('two copies of one basis agree', () => {
    expect(sameSignature(received(basis), received(Buffer.from(basis)))).toBe(true);
  });

  test('one changed byte, another size, block size, seed or image hash: they do not', () => {
    const edited = Buffer.from(basis);
    edited[50 * KiB] = edited[50 * KiB]! ^ 1;
    expect(sameSignature(received(basis), received(edited))).toBe(false);
    expect(sameSignature(received(basis), received(basis.subarray(0, basis.length - 1)))).toBe(false);
    expect(sameSignature(received(basis), received(basis, { blockSize: 8 * KiB }))).toBe(false);
    expect(sameSignature(received(basis), received(basis, { seed: randomBytes(16) }))).toBe(false);
    expect(sameSignature(received(basis), received(basis, { targetHash: randomBytes(32) }))).toBe(false);
  });

  test('a change that keeps every weak sum still differs by its strong digest', () => {
    // The weak sum (Adler-32) stays when bytes i, i+1, i+2 change by +1, -2, +1: their sum and weighted sum stay.
    const edited = Buffer.from(basis);
    const i = 10 * KiB + 5;
    edited[i] = 10;
    edited[i + 1] = 20;
    edited[i + 2] = 30;
    const base = Buffer.from(edited);
    base[i] = 11;
    base[i + 1] = 18;
    base[i + 2] = 31;
    const a = received(base);
    const b = received(edited);
    expect(Buffer.from(a.sig.weak.buffer, a.sig.weak.byteOffset, a.sig.blockCount * 4).equals(Buffer.from(b.sig.weak.buffer, b.sig.weak.byteOffset, b.sig.blockCount * 4))).toBe(true);
    expect(sameSignature(a, b)).toBe(false);
  });
});
