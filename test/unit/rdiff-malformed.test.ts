/**
 * Malformed rdiff deltas and signatures: each raises a typed error with a
 * stable code, checked before anything is allocated or written; random
 * mutations of valid files raise nothing but SyncErrors.
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { fc, test as fcTest } from '@fast-check/vitest';
import { rdiffPatchFile } from '../../src/api/rdiff.js';
import { CorruptInputError, LimitExceededError, SyncError, UnexpectedEofError } from '../../src/core/errors.js';
import { RdiffDeltaDecoder, decodeRdiffDelta, encodeRdiffDelta } from '../../src/rdiff/delta.js';
import { rdiffDiff } from '../../src/rdiff/matcher.js';
import { RdiffSignatureReader, rdiffSignatureOf, readRdiffSignature } from '../../src/rdiff/signature.js';
import { weakSum } from '../../src/rdiff/weak.js';

const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ''), 'hex');
const MAGIC = '72730236';

/** The error `fn` throws (it must throw). */
function thrown(fn: () => unknown): SyncError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(SyncError);
    return e as SyncError;
  }
  throw new Error('expected an error, got none');
}

describe('malformed rdiff deltas', () => {
  test.each([
    ['empty input', '', 'ERR_UNEXPECTED_EOF'],
    ['half a magic', '7273', 'ERR_UNEXPECTED_EOF'],
    ['wrong magic (a signature)', '72730147 00', 'ERR_BAD_MAGIC'],
    ['no END command', MAGIC, 'ERR_UNEXPECTED_EOF'],
    ['literal cut short', `${MAGIC} 05 6162`, 'ERR_UNEXPECTED_EOF'],
    ['literal-N length cut short', `${MAGIC} 42 01`, 'ERR_UNEXPECTED_EOF'],
    ['copy parameters cut short', `${MAGIC} 4a 0001 00`, 'ERR_UNEXPECTED_EOF'],
    ['reserved command 0x55', `${MAGIC} 55 00`, 'ERR_CORRUPT'],
    ['reserved command 0xff', `${MAGIC} ff`, 'ERR_CORRUPT'],
    ['zero-length literal', `${MAGIC} 41 00 00`, 'ERR_CORRUPT'],
    ['zero-length copy', `${MAGIC} 45 00 00 00`, 'ERR_CORRUPT'],
    ['64-bit length beyond 2^53', `${MAGIC} 44 0020000000000000`, 'ERR_CORRUPT'],
    ['64-bit copy start with the sign bit set', `${MAGIC} 51 8000000000000000 01 00`, 'ERR_CORRUPT'],
    ['copy end beyond 2^53', `${MAGIC} 54 001fffffffffffff 0000000000000010 00`, 'ERR_CORRUPT'],
    ['bytes after END', `${MAGIC} 01 61 00 00`, 'ERR_TRAILING_DATA'],
  ])('%s -> %s', (_name, bytes, code) => {
    expect(thrown(() => decodeRdiffDelta(hex(bytes))).code).toBe(code);
  });

  test('a few messages, pinned', () => {
    expect(thrown(() => decodeRdiffDelta(hex(`${MAGIC} 55`))).message).toBe('reserved command byte 0x55 in rdiff delta');
    expect(thrown(() => decodeRdiffDelta(hex(`${MAGIC} 05 61`))).message).toBe(
      'unexpected end of input reading rdiff delta literal data: needed 4 byte(s), 0 available',
    );
    const e = thrown(() => decodeRdiffDelta(hex('52534447 00')));
    expect(e.message).toBe('not an rdiff delta: magic 0x52534447, expected 0x72730236');
    expect(e.details).toEqual({ magic: 0x52534447 });
  });

  test('the output cap is checked before a literal or copy is handed out', () => {
    const e = thrown(() => decodeRdiffDelta(hex(`${MAGIC} 43 40000000`), { maxOutput: 1 << 20 }));
    expect(e).toBeInstanceOf(LimitExceededError);
    expect(e.details).toMatchObject({ what: 'rdiff delta output size', value: 1 << 30, limit: 1 << 20 });
    const d = new RdiffDeltaDecoder({ maxOutput: 100 });
    expect(d.push(hex(`${MAGIC} 45 00 60`))).toEqual([{ kind: 'copy', offset: 0, length: 96 }]);
    expect(() => d.push(hex('05'))).toThrow(LimitExceededError);
    expect(() => d.push(hex('00'))).toThrow(/failed earlier/);
  });

  test('a huge declared literal is not buffered: data is handed out as it arrives', () => {
    const d = new RdiffDeltaDecoder();
    expect(d.push(hex(`${MAGIC} 44 0000000100000000`))).toEqual([]);
    const ops = d.push(new Uint8Array(1000));
    expect(ops).toHaveLength(1);
    expect(ops[0]).toMatchObject({ kind: 'literal' });
    const e = thrown(() => d.end());
    expect(e).toBeInstanceOf(UnexpectedEofError);
    expect(e.details).toEqual({ what: 'rdiff delta literal data', expected: 2 ** 32 - 1000, available: 0 });
  });

  fcTest.prop([fc.array(fc.record({ at: fc.nat(), v: fc.integer({ min: 0, max: 255 }) }), { minLength: 1, maxLength: 4 }), fc.nat({ max: 40 })], { numRuns: 300 })(
    'mutated and truncated deltas raise only SyncErrors',
    (muts, cut) => {
      const good = encodeRdiffDelta([
        { kind: 'literal', data: new Uint8Array([1, 2, 3]) },
        { kind: 'copy', offset: 70000, length: 300 },
        { kind: 'literal', data: new Uint8Array(80).fill(9) },
        { kind: 'copy', offset: 0, length: 5 },
      ]);
      const bad = Buffer.from(good.subarray(0, Math.max(0, good.length - (cut % 8))));
      for (const m of muts) if (bad.length) bad[m.at % bad.length] = m.v;
      try {
        decodeRdiffDelta(bad);
      } catch (e) {
        if (!(e instanceof SyncError)) throw e;
      }
      // A fresh decoder still decodes the good delta.
      expect(decodeRdiffDelta(good)).toHaveLength(4);
    },
  );
});

describe('malformed rdiff signatures', () => {
  const good = rdiffSignatureOf(new Uint8Array(1000).map((_, i) => i * 7), { sigType: 'md4', blockLen: 256, strongLen: 8 });

  test.each([
    ['empty file', '', 'ERR_UNEXPECTED_EOF'],
    ['short header', '72730136 00000100', 'ERR_UNEXPECTED_EOF'],
    ['unknown magic', '72730138 00000100 00000008', 'ERR_BAD_MAGIC'],
    ['a delta, not a signature', '72730236 00000100 00000008', 'ERR_BAD_MAGIC'],
    ['zero block length', '72730136 00000000 00000008', 'ERR_CORRUPT'],
    ['block length beyond the limit', '72730136 7fffffff 00000008', 'ERR_LIMIT'],
    ['zero strong length', '72730137 00000100 00000000', 'ERR_CORRUPT'],
    ['MD4 strong length 17', '72730146 00000100 00000011', 'ERR_CORRUPT'],
    ['BLAKE2 strong length 33', '72730147 00000100 00000021', 'ERR_CORRUPT'],
    ['record cut short', '72730136 00000100 00000008 01020304 0506', 'ERR_UNEXPECTED_EOF'],
  ])('%s -> %s', (_name, bytes, code) => {
    expect(thrown(() => readRdiffSignature(hex(bytes))).code).toBe(code);
  });

  test('a header-only signature is a valid empty one; a good one reads back', () => {
    expect(readRdiffSignature(hex('72730147 00000800 00000020')).blockCount).toBe(0);
    const s = readRdiffSignature(good);
    expect(s.blockCount).toBe(4);
    expect(s.params).toEqual({ sigType: 'md4', blockLen: 256, strongLen: 8 });
  });

  test('the block count is capped while reading, not after', () => {
    const r = new RdiffSignatureReader({ maxBlocks: 3 });
    const e = thrown(() => r.push(good));
    expect(e).toBeInstanceOf(LimitExceededError);
    expect(e.details).toMatchObject({ what: 'rdiff signature block count', limit: 3 });
  });

  test('a crafted signature whose blocks all share one weak sum loads and scans in bounded time', () => {
    const blocks = 100_000;
    const sig = Buffer.alloc(12 + blocks * 12);
    sig.writeUInt32BE(0x72730136, 0);
    sig.writeUInt32BE(16, 4);
    sig.writeUInt32BE(8, 8);
    const zerosWeak = weakSum('rollsum', new Uint8Array(16));
    for (let i = 0; i < blocks; i++) {
      sig.writeUInt32BE(zerosWeak, 12 + i * 12);
      sig.writeUInt32BE(i + 1, 12 + i * 12 + 8); // distinct strong sums, none of them the zeros' MD4
    }
    const t0 = performance.now();
    const s = readRdiffSignature(sig);
    // Every window of an all-zero file has that weak sum and collides with every block.
    const ops = rdiffDiff(s, new Uint8Array(64 * 1024));
    expect(ops.every((o) => o.kind === 'literal')).toBe(true);
    expect(performance.now() - t0).toBeLessThan(10_000);
  });

  test('MD4 strong length above 16 is implausible, with the value in details', () => {
    const e = thrown(() => readRdiffSignature(hex('72730136 00000100 00000011')));
    expect(e).toBeInstanceOf(CorruptInputError);
    expect(e.details).toEqual({ strongLen: 17 });
  });
});

describe('rdiffPatchFile refuses bad deltas without touching the output', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'resync-rdiff-bad-'));
    await writeFile(join(dir, 'basis'), Buffer.alloc(1000, 7));
    await writeFile(join(dir, 'out'), 'previous contents');
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  test.each([
    ['copy past the end of the basis', encodeRdiffDelta([{ kind: 'copy', offset: 900, length: 101 }]), 'ERR_COPY_OUT_OF_BOUNDS'],
    ['missing END', hex(`${MAGIC} 03 616263`), 'ERR_UNEXPECTED_EOF'],
    ['wrong magic', hex('72730137 00'), 'ERR_BAD_MAGIC'],
  ])('%s -> %s', async (_name, bytes, code) => {
    await writeFile(join(dir, 'delta'), bytes);
    const err = await rdiffPatchFile(join(dir, 'basis'), join(dir, 'delta'), join(dir, 'out')).then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(SyncError);
    expect((err as SyncError).code).toBe(code);
    expect(await readFile(join(dir, 'out'), 'utf8')).toBe('previous contents');
  });

  test('the output cap applies to the whole patch', async () => {
    await writeFile(join(dir, 'delta'), encodeRdiffDelta([{ kind: 'copy', offset: 0, length: 1000 }]));
    const err = await rdiffPatchFile(join(dir, 'basis'), join(dir, 'delta'), join(dir, 'out'), { maxOutput: 999 }).catch((e: unknown) => e);
    expect((err as SyncError).code).toBe('ERR_LIMIT');
  });
});
