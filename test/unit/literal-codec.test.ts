import { describe, expect, test } from 'vitest';
import { randomBytes } from 'node:crypto';
import { deflateRawSync } from 'node:zlib';
import { CODEC_LEVELS, compressCaps, levelFromCaps, literalCodec, literalFromZstd, pickCodec, zstdStatus } from '../../protocol/literal-codec.js';
import { literalFromZ, opMessage } from '../../src/format/deltafile.js';
import { decodeMessage, encodeMessage } from '../../protocol/codec.js';
import { MsgType } from '../../protocol/constants.js';
import type { LiteralZstdMsg, Message } from '../../protocol/messages.js';
import { MAX_LITERAL } from '../../src/core/limits.js';

/** Text-like data that compresses about 3:1. */
function texty(n: number, seed = 1): Buffer {
  const words = ['volume', 'block', 'resync', 'journal', '\n', 'image', 'extent', 'zero', 'ext4', 'inode', String(seed)];
  const out: string[] = [];
  let len = 0;
  for (let i = 0; len < n; i++) {
    const w = words[(i * 7 + seed + (i >> 3)) % words.length]!;
    out.push(w);
    len += w.length + 1;
  }
  return Buffer.from(out.join(' ')).subarray(0, n);
}

/**
 * A zstd frame of `blocks` RLE blocks of 128 KiB zeros, with no content size
 * in its header: 4 bytes of frame per 128 KiB of output, built by hand.
 */
function rleBomb(blocks: number): Buffer {
  const header = Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x38]); // magic; no FCS; window 128 KiB
  const parts = [header];
  for (let i = 0; i < blocks; i++) {
    const last = i === blocks - 1 ? 1 : 0;
    const bh = ((128 * 1024) << 3) | (1 << 1) | last; // block size, type RLE, last flag
    parts.push(Buffer.from([bh & 0xff, (bh >> 8) & 0xff, (bh >> 16) & 0xff, 0x00]));
  }
  return Buffer.concat(parts);
}

describe('zstd literals', () => {
  test('the binding loads in this build', () => {
    expect(zstdStatus()).toMatchObject({ available: true });
  });

  test('round trip at each end of the level range, smaller than DEFLATE at its default', () => {
    const data = texty(MAX_LITERAL);
    const z = literalCodec('deflate').compress(data) as Message;
    for (const level of [CODEC_LEVELS.zstd.min, CODEC_LEVELS.zstd.default, CODEC_LEVELS.zstd.max]) {
      const m = literalCodec('zstd', level).compress(data) as LiteralZstdMsg;
      expect(m.type).toBe(MsgType.LiteralZstd);
      expect(m.length).toBe(data.length);
      if (level === CODEC_LEVELS.zstd.default && z.type === MsgType.LiteralZ) expect(m.data.length).toBeLessThan(z.data.length);
      // through the codec, as a peer would get it
      const back = decodeMessage(encodeMessage(m)) as LiteralZstdMsg;
      const op = literalFromZstd(back);
      expect(op.kind === 'literal' && Buffer.from(op.data).equals(data)).toBe(true);
    }
  });

  test('incompressible and short literals stay plain', () => {
    const zc = literalCodec('zstd');
    expect(zc.compress(randomBytes(64 * 1024))).toBeNull();
    expect(zc.compress(Buffer.alloc(255))).toBeNull();
    expect(opMessage({ kind: 'literal', data: randomBytes(4096) }, zc).type).toBe(MsgType.Literal);
    expect(opMessage({ kind: 'literal', data: Buffer.alloc(4096, 0x61) }, zc).type).toBe(MsgType.LiteralZstd);
    // `true` is still DEFLATE at level 1, as delta files have it
    const d = opMessage({ kind: 'literal', data: Buffer.alloc(4096) }, true);
    expect(d.type).toBe(MsgType.LiteralZ);
    if (d.type === MsgType.LiteralZ) expect(literalFromZ(d)).toEqual({ kind: 'literal', data: Buffer.alloc(4096) });
  });

  test('zeros (a hole) go as a small LiteralZ whatever the codec, and come back as zeros; other DEFLATE of zeros still inflates', () => {
    for (const codec of [false, true, literalCodec('zstd'), null] as const) {
      for (const n of [4096, 300_000, MAX_LITERAL]) {
        const m = opMessage({ kind: 'literal', data: Buffer.alloc(n) }, codec);
        expect(m.type, `${String(codec)} ${n}`).toBe(MsgType.LiteralZ);
        if (m.type !== MsgType.LiteralZ) continue;
        expect(m.data.length).toBeLessThanOrEqual(2048);
        // (Buffer.equals: toEqual walks a MiB element by element, for seconds.)
        const back = literalFromZ(m);
        expect(back.kind === 'literal' && Buffer.from(back.data).equals(Buffer.alloc(n))).toBe(true);
      }
    }
    // Short zero runs, and runs with one byte set, are not taken for a hole.
    expect(opMessage({ kind: 'literal', data: Buffer.alloc(4095) }).type).toBe(MsgType.Literal);
    const one = Buffer.alloc(MAX_LITERAL);
    one[MAX_LITERAL - 1] = 1;
    expect(opMessage({ kind: 'literal', data: one }).type).toBe(MsgType.Literal);
    // Zeros compressed some other way (another sender, another zlib) are inflated as any LiteralZ.
    const other = deflateRawSync(Buffer.alloc(MAX_LITERAL), { level: 1 });
    const a = literalFromZ({ type: MsgType.LiteralZ, length: MAX_LITERAL, data: other });
    expect(a.kind === 'literal' && Buffer.from(a.data).equals(Buffer.alloc(MAX_LITERAL))).toBe(true);
    // A stream that is not the zeros' but as short is inflated (and refused when it does not fit), not taken for zeros.
    const ones = deflateRawSync(Buffer.alloc(MAX_LITERAL, 1), { level: 9 });
    const b = literalFromZ({ type: MsgType.LiteralZ, length: MAX_LITERAL, data: ones });
    expect(b.kind === 'literal' && Buffer.from(b.data).equals(Buffer.alloc(MAX_LITERAL, 1))).toBe(true);
  });

  test('a bomb (a 1 MiB message claiming 32 GiB) fails at its declared length without the memory', () => {
    const bomb = rleBomb(256 * 1024); // 1 MiB + 6 bytes of frame: 32 GiB of zeros
    expect(bomb.length).toBeLessThanOrEqual(MAX_LITERAL + 1024);
    const m = decodeMessage(encodeMessage({ type: MsgType.LiteralZstd, length: MAX_LITERAL, data: bomb })) as LiteralZstdMsg;
    const before = process.memoryUsage().rss;
    expect(() => literalFromZstd(m)).toThrowError(expect.objectContaining({ code: 'ERR_CORRUPT' }));
    expect(process.memoryUsage().rss - before).toBeLessThan(64 << 20);
    // The same frame cut to one block inflates to 128 KiB: exact when declared so, refused when not.
    const one = rleBomb(1);
    expect(literalFromZstd({ type: MsgType.LiteralZstd, length: 128 * 1024, data: one })).toEqual({ kind: 'literal', data: Buffer.alloc(128 * 1024) });
    expect(() => literalFromZstd({ type: MsgType.LiteralZstd, length: 128 * 1024 + 1, data: one })).toThrowError(expect.objectContaining({ code: 'ERR_CORRUPT' }));
    expect(() => literalFromZstd({ type: MsgType.LiteralZstd, length: 1000, data: one })).toThrowError(expect.objectContaining({ code: 'ERR_CORRUPT' }));
  });

  test('garbage, a cut frame and trailing bytes are ERR_CORRUPT, and the next literal still decodes', () => {
    const data = texty(10_000, 3);
    const m = literalCodec('zstd').compress(data) as LiteralZstdMsg;
    const bad = [Buffer.from('this is not a zstd frame at all'), Buffer.from(m.data).subarray(0, m.data.length - 3), Buffer.concat([m.data, Buffer.from([1, 2, 3])])];
    for (const b of bad) expect(() => literalFromZstd({ ...m, data: b })).toThrowError(expect.objectContaining({ code: 'ERR_CORRUPT' }));
    const op = literalFromZstd(m);
    expect(op.kind === 'literal' && Buffer.from(op.data).equals(data)).toBe(true);
  });
});

describe('choosing the codec', () => {
  test('the Hello carries zstd unless deflate is chosen, and the level when given', () => {
    expect(compressCaps(null, undefined)).toEqual(['compress', 'zstd']);
    expect(compressCaps('deflate', 6)).toEqual(['compress', 'compress-level=6']);
    expect(levelFromCaps(['push', 'compress-level=12'])).toBe(12);
    expect(levelFromCaps(['compress-level=', 'compress-level=x', 'compress-level=123'])).toBeUndefined();
  });

  test('zstd where the receiver has it, DEFLATE where it has not (with a note if zstd was asked for), none without compress', () => {
    const notes: string[] = [];
    const note = (m: string): void => void notes.push(m);
    expect(pickCodec(null, undefined, ['compress', 'zstd'], note)).toMatchObject({ name: 'zstd', level: 3 });
    expect(pickCodec(null, 7, ['compress'], note)).toMatchObject({ name: 'deflate', level: 7 });
    expect(notes).toEqual([]);
    expect(pickCodec('zstd', 15, ['compress'], note)).toMatchObject({ name: 'deflate', level: 9 });
    expect(notes).toEqual(['the peer does not offer zstd; compressing with deflate']);
    expect(pickCodec('deflate', undefined, ['compress', 'zstd'])).toMatchObject({ name: 'deflate', level: 1 });
    expect(pickCodec('zstd', undefined, ['push', 'zstd'])).toBeNull();
    // a peer's level out of range is brought into it, not an error
    expect(pickCodec(null, 99, ['compress', 'zstd'])).toMatchObject({ name: 'zstd', level: 19 });
  });

  test('a level out of range for the chosen codec is ERR_PARAM', () => {
    expect(() => literalCodec('deflate', 10)).toThrowError(expect.objectContaining({ code: 'ERR_PARAM' }));
    expect(() => literalCodec('zstd', 0)).toThrowError(expect.objectContaining({ code: 'ERR_PARAM' }));
  });
});
