/**
 * The running file digests (src/core/stream-digest.ts): however the bytes
 * are split into updates, the digest is the one-shot SHA-256 or keyed BLAKE3
 * of them, through the native binding and through the JS fallback alike, and
 * a digest taken midway neither ends nor changes the stream.
 */
import { createHash, randomBytes } from 'node:crypto';
import { describe, expect, test } from 'vitest';
import { fc, test as fcTest } from '@fast-check/vitest';
import { blake3 as blake3Js } from '@noble/hashes/blake3.js';
import { createStreamDigest, FILE_DIGEST_KEY, type StreamDigestAlg } from '../../src/core/stream-digest.js';
import { nativeBlake3 } from '../../src/core/strong.js';

const oneShot = (alg: StreamDigestAlg, b: Uint8Array): Buffer =>
  alg === 'sha256' ? createHash('sha256').update(b).digest() : Buffer.from(blake3Js(b, { key: FILE_DIGEST_KEY }));

/** Feed `data` cut at `cuts` (sorted offsets). */
function feed(alg: StreamDigestAlg, forceJs: boolean, data: Uint8Array, cuts: number[]) {
  const d = createStreamDigest(alg, forceJs);
  let at = 0;
  for (const c of [...cuts, data.length]) {
    d.update(data.subarray(at, c));
    at = c;
  }
  return d;
}

const variants: [StreamDigestAlg, boolean][] = [
  ['sha256', false],
  ['blake3', false],
  ['blake3', true],
];

describe('stream digests', () => {
  test('the native BLAKE3 binding is there (else only the fallback is tested)', () => {
    expect(nativeBlake3()).not.toBeNull();
  });

  test('the key is the 32 ASCII bytes SPEC §2.4 names', () => {
    expect(FILE_DIGEST_KEY.toString('latin1')).toBe('resync file digest, BLAKE3 keyed');
    expect(FILE_DIGEST_KEY.length).toBe(32);
  });

  test.each(variants)('%s (JS only: %s): empty input, small and large updates, frames of a few KiB', (alg, forceJs) => {
    expect(feed(alg, forceJs, new Uint8Array(0), []).digest()).toEqual(oneShot(alg, new Uint8Array(0)));
    const data = randomBytes(3 * 1024 * 1024 + 17);
    // A delta's shape: 4-byte lengths and payloads of a few KiB, with some payloads above the direct-update size.
    const cuts: number[] = [];
    for (let at = 0, k = 0; at < data.length; k++) {
      at += k % 2 === 0 ? 4 : k % 7 === 0 ? 200_000 : 1 + ((k * 2654435761) % 9000);
      if (at < data.length) cuts.push(at);
    }
    expect(feed(alg, forceJs, data, cuts).digest()).toEqual(oneShot(alg, data));
    expect(feed(alg, forceJs, data, []).digest()).toEqual(oneShot(alg, data));
  });

  test.each(variants)('%s (JS only: %s): a digest midway does not end or change the stream; a tail is hashed last', (alg, forceJs) => {
    const data = randomBytes(300_000);
    const d = createStreamDigest(alg, forceJs);
    d.update(data.subarray(0, 1000));
    expect(d.digest()).toEqual(oneShot(alg, data.subarray(0, 1000)));
    d.update(data.subarray(1000, 250_000));
    expect(d.digest()).toEqual(oneShot(alg, data.subarray(0, 250_000)));
    expect(d.digest(data.subarray(250_000))).toEqual(oneShot(alg, data));
  });

  fcTest.prop([fc.uint8Array({ minLength: 0, maxLength: 70_000 }), fc.array(fc.nat(), { maxLength: 40 })], { numRuns: 60 })(
    'any split gives the one-shot digest, native and JS alike',
    (data, raw) => {
      const cuts = raw.map((c) => c % (data.length + 1)).sort((a, b) => a - b);
      for (const [alg, forceJs] of variants) expect(feed(alg, forceJs, data, cuts).digest()).toEqual(oneShot(alg, data));
    },
  );
});
