/**
 * The malformed-file table: every file in fixtures/malformed/ must be rejected
 * with the error code cases.json names, as a SyncError, by the decoders (fed
 * whole and byte by byte) and by the file API. patchFile and deltaFile must
 * leave an existing output file exactly as it was and leave no temp files.
 */
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { deflateRawSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { SyncError } from '../../src/core/errors.js';
import { DeltaFileDecoder } from '../../src/format/deltafile.js';
import { SignatureFileDecoder } from '../../src/format/sigfile.js';
import { deltaFile, loadSignatureFile, patchFile } from '../../src/api/files.js';
import { FileBuilder, MALFORMED_SPEC, imageHash, malformedBasis, validDeltaBytes, validDeltaTarget, validSigBytes } from '../helpers/golden.js';
import { DELTA_MAGIC, MsgType, SIG_MAGIC } from '../../protocol/constants.js';
import { MAX_BLOCKS } from '../../src/core/limits.js';

const DIR = fileURLToPath(new URL('../../fixtures/malformed/', import.meta.url));

interface Case {
  file: string;
  kind: 'signature' | 'delta';
  stage: 'decode' | 'patch';
  code: string;
  description: string;
}
const table = JSON.parse(readFileSync(join(DIR, 'cases.json'), 'utf8')) as { basis: string; cases: Case[] };
const basisPath = join(DIR, table.basis);

/** Run `fn`; return the error it throws (fails the test if it returns). */
async function thrown(fn: () => unknown): Promise<unknown> {
  try {
    await fn();
  } catch (e) {
    return e;
  }
  throw new Error('expected an error, got none');
}

function expectCode(e: unknown, code: string, where: string): void {
  expect(e, `${where}: not a SyncError: ${String(e)}`).toBeInstanceOf(SyncError);
  expect((e as SyncError).code, `${where}: ${(e as Error).message}`).toBe(code);
}

/** Feed `bytes` to a fresh decoder of `kind` in pieces of `step` bytes (0 = whole), then end it. */
function decode(kind: Case['kind'], bytes: Uint8Array, step = 0): void {
  const pieces: Uint8Array[] = [];
  if (step === 0) pieces.push(bytes);
  else for (let p = 0; p < bytes.length; p += step) pieces.push(bytes.subarray(p, p + step));
  if (kind === 'signature') {
    const d = new SignatureFileDecoder();
    for (const p of pieces) d.push(p);
    d.end();
  } else {
    const d = new DeltaFileDecoder();
    for (const p of pieces) d.push(p);
    d.end();
  }
}

let work: string;
const PREVIOUS = Buffer.from('previous contents of the output file\n');

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'resync-malformed-'));
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

/** A fresh directory holding an output file with known contents. */
async function outputDir(name: string): Promise<{ dir: string; out: string }> {
  const dir = join(work, name);
  await rm(dir, { recursive: true, force: true });
  await import('node:fs/promises').then((fs) => fs.mkdir(dir));
  const out = join(dir, 'out.bin');
  await writeFile(out, PREVIOUS);
  return { dir, out };
}

async function expectUntouched(dir: string, out: string): Promise<void> {
  expect(await readFile(out)).toEqual(PREVIOUS);
  expect(await readdir(dir), 'temp files left behind').toEqual(['out.bin']);
}

describe('the table itself', () => {
  test('covers the required kinds of damage', () => {
    const codes = new Set(table.cases.map((c) => c.code));
    for (const c of [
      'ERR_BAD_MAGIC',
      'ERR_VERSION',
      'ERR_UNEXPECTED_EOF',
      'ERR_TRAILING_DATA',
      'ERR_CORRUPT',
      'ERR_FRAME_TOO_LARGE',
      'ERR_UNEXPECTED_MESSAGE',
      'ERR_COPY_OUT_OF_BOUNDS',
      'ERR_LIMIT',
      'ERR_BASIS_MISMATCH',
      'ERR_VERIFY_FAILED',
    ]) {
      expect(codes).toContain(c);
    }
    expect(table.cases.length).toBeGreaterThanOrEqual(60);
  });

  test('the valid files the cases are made from are accepted', async () => {
    expect(() => decode('signature', validSigBytes())).not.toThrow();
    expect(() => decode('delta', validDeltaBytes())).not.toThrow();
    const { dir, out } = await outputDir('valid');
    const d = join(dir, 'valid.delta');
    await writeFile(d, validDeltaBytes());
    await patchFile(basisPath, d, out);
    expect(await readFile(out)).toEqual(validDeltaTarget());
    expect(await readFile(basisPath)).toEqual(malformedBasis());
  });
});

describe.each(table.cases.filter((c) => c.kind === 'signature'))('$file ($code)', (c) => {
  const bytes = readFileSync(join(DIR, c.file));

  test(`SignatureFileDecoder rejects it whole: ${c.description}`, async () => {
    expectCode(await thrown(() => decode('signature', bytes)), c.code, 'whole');
  });

  test('SignatureFileDecoder rejects it fed byte by byte, with the same code', async () => {
    expectCode(await thrown(() => decode('signature', bytes, 1)), c.code, 'byte by byte');
  });

  test('loadSignatureFile rejects it; deltaFile leaves an existing output untouched', async () => {
    const { dir, out } = await outputDir(c.file);
    const sigPath = join(work, `${c.file}.sig`);
    await writeFile(sigPath, bytes);
    expectCode(await thrown(() => loadSignatureFile(sigPath)), c.code, 'loadSignatureFile');
    expectCode(await thrown(() => deltaFile(sigPath, basisPath, out)), c.code, 'deltaFile');
    await expectUntouched(dir, out);
  });
});

describe.each(table.cases.filter((c) => c.kind === 'delta'))('$file ($code)', (c) => {
  const bytes = readFileSync(join(DIR, c.file));

  if (c.stage === 'decode') {
    test(`DeltaFileDecoder rejects it whole: ${c.description}`, async () => {
      expectCode(await thrown(() => decode('delta', bytes)), c.code, 'whole');
    });
    test('DeltaFileDecoder rejects it fed byte by byte, with the same code', async () => {
      expectCode(await thrown(() => decode('delta', bytes, 1)), c.code, 'byte by byte');
    });
  } else {
    test(`DeltaFileDecoder accepts it (the damage shows only against a basis): ${c.description}`, () => {
      expect(() => decode('delta', bytes)).not.toThrow();
    });
  }

  test('patchFile rejects it and leaves the existing output and the basis untouched', async () => {
    const { dir, out } = await outputDir(c.file);
    const deltaPath = join(work, `${c.file}.delta`);
    await writeFile(deltaPath, bytes);
    expectCode(await thrown(() => patchFile(basisPath, deltaPath, out)), c.code, 'patchFile');
    await expectUntouched(dir, out);
    expect(await readFile(basisPath)).toEqual(malformedBasis());
  });
});

describe('patchFile error paths outside the table', () => {
  test('a missing delta file is ERR_IO and the output is untouched', async () => {
    const { dir, out } = await outputDir('missing-delta');
    expectCode(await thrown(() => patchFile(basisPath, join(dir, 'nope.delta'), out)), 'ERR_IO', 'patchFile');
    await expectUntouched(dir, out);
  });

  test('a missing basis is ERR_IO and the output is untouched', async () => {
    const { dir, out } = await outputDir('missing-basis');
    const deltaPath = join(dir, '..', 'valid-for-missing-basis.delta');
    await writeFile(deltaPath, validDeltaBytes());
    expectCode(await thrown(() => patchFile(join(dir, 'nope.img'), deltaPath, out)), 'ERR_IO', 'patchFile');
    await expectUntouched(dir, out);
  });

  test('a verification failure with a basis hash in the header is reported as ERR_BASIS_MISMATCH', async () => {
    // Same-size basis with different contents: the copies read the wrong bytes.
    const { dir, out } = await outputDir('other-basis');
    const other = join(work, 'other-basis.img');
    await writeFile(other, Buffer.alloc(4096, 0x5a));
    const deltaPath = join(work, 'other-basis.delta');
    await writeFile(deltaPath, validDeltaBytes());
    expectCode(await thrown(() => patchFile(other, deltaPath, out)), 'ERR_BASIS_MISMATCH', 'patchFile');
    await expectUntouched(dir, out);
  });

  // Regression: patchFile once stopped reading the delta at the end record, so
  // when that record finished exactly at a 1 MiB read boundary, bytes after it
  // went unnoticed. It now reads to the end of the file before committing.
  test('trailing data that starts exactly at a 1 MiB read boundary is rejected', async () => {
    const delta = Buffer.concat([deltaEndingAt(1 << 20), Buffer.alloc(2)]);
    // The decoder itself rejects the file...
    expectCode(await thrown(() => decode('delta', delta)), 'ERR_TRAILING_DATA', 'decoder');
    // ...but patchFile does not.
    const { dir, out } = await outputDir('trailing-at-boundary');
    const deltaPath = join(work, 'trailing-at-boundary.delta');
    await writeFile(deltaPath, delta);
    const e = await thrown(() => patchFile(basisPath, deltaPath, out));
    expectCode(e, 'ERR_TRAILING_DATA', 'patchFile');
    await expectUntouched(dir, out);
  });

  // Regression: 4+ trailing bytes in the same push as the end record were once
  // parsed as a frame length ("junk" = 0x6a756e6b, ERR_FRAME_TOO_LARGE), so the
  // error depended on how the input was chunked. The reader now stops at the end record.
  test('4 trailing bytes "junk" give ERR_TRAILING_DATA however the file is chunked', async () => {
    const bytes = Buffer.concat([validDeltaBytes(), Buffer.from('junk')]);
    expectCode(await thrown(() => decode('delta', bytes, 1)), 'ERR_TRAILING_DATA', 'byte by byte');
    expectCode(await thrown(() => decode('delta', bytes)), 'ERR_TRAILING_DATA', 'whole');
  });

  test('the same file without the trailing bytes patches fine (control for the case above)', async () => {
    const delta = deltaEndingAt(1 << 20);
    const { out } = await outputDir('boundary-control');
    const deltaPath = join(work, 'boundary-control.delta');
    await writeFile(deltaPath, delta);
    await patchFile(basisPath, deltaPath, out);
    expect((await readFile(out)).length).toBe(literalFor(delta).length);
  });
});

describe('LiteralZ strictness', () => {
  // Regression: literalFromZ once ignored bytes after the end of the DEFLATE
  // stream, so two different files decoded to the same ops. Every
  // other part of the format rejects trailing bytes (ERR_TRAILING_DATA after
  // the end record, "extra bytes" inside a msgpack payload).
  test('bytes after the end of a LiteralZ DEFLATE stream are rejected', async () => {
    const text = Buffer.alloc(1000, 0x41);
    const z = Buffer.concat([deflateRawSync(text), Buffer.from('extra')]);
    const basis = malformedBasis();
    const b = new FileBuilder(DELTA_MAGIC).msg({
      type: MsgType.DeltaHeader,
      blockSize: MALFORMED_SPEC.blockSize,
      basisSize: basis.length,
      basisHash: null,
      targetSize: text.length,
      strongAlgId: 1,
      seed: MALFORMED_SPEC.seed,
    });
    b.msg({ type: MsgType.LiteralZ, length: text.length, data: z });
    b.msg({ type: MsgType.DeltaEnd, targetSize: text.length, targetHash: imageHash(text, MALFORMED_SPEC), opCount: 1, digest: b.digest() });
    expectCode(await thrown(() => decode('delta', b.bytes())), 'ERR_CORRUPT', 'whole');
  });
});

describe('allocation bounded by the header', () => {
  // Regression: a signature header that passes every check (2^23 blocks of 16
  // bytes, 32-byte strong hashes) once made SignatureFileDecoder allocate the
  // whole Signature (over 400 MB) before a single block arrived, from a ~40-byte
  // file. Storage now grows with the blocks actually received.
  test('a 40-byte header-only signature does not make the decoder allocate 300 MB', () => {
    const b = new FileBuilder(SIG_MAGIC).msg({
      type: MsgType.SigHeader,
      blockSize: 16,
      imageSize: MAX_BLOCKS * 16,
      strongAlgId: 1,
      strongLen: 32,
      seed: new Uint8Array(16),
      regionBlocks: 0,
    });
    const bytes = b.bytes();
    expect(bytes.length).toBeLessThan(64);
    const before = process.memoryUsage().arrayBuffers;
    const d = new SignatureFileDecoder();
    d.push(bytes);
    const grown = process.memoryUsage().arrayBuffers - before;
    expect(grown).toBeLessThan(300 * 1000 * 1000);
  });
});

/** A valid delta against the malformed set's basis, made only of one literal, whose size is exactly `size`. */
function deltaEndingAt(size: number): Buffer {
  const build = (n: number): Buffer => {
    const data = Buffer.alloc(n, 0x61);
    const basis = malformedBasis();
    const b = new FileBuilder(DELTA_MAGIC).msg({
      type: MsgType.DeltaHeader,
      blockSize: MALFORMED_SPEC.blockSize,
      basisSize: basis.length,
      basisHash: imageHash(basis, MALFORMED_SPEC),
      targetSize: n,
      strongAlgId: 1,
      seed: MALFORMED_SPEC.seed,
    });
    b.msg({ type: MsgType.Literal, data });
    b.msg({ type: MsgType.DeltaEnd, targetSize: n, targetHash: imageHash(data, MALFORMED_SPEC), opCount: 1, digest: b.digest() });
    return b.bytes();
  };
  let n = size - 200;
  for (let i = 0; i < 4; i++) n += size - build(n).length;
  const out = build(n);
  if (out.length !== size) throw new Error(`could not build a delta of exactly ${size} bytes`);
  return out;
}

/** The literal of a delta made by deltaEndingAt. */
function literalFor(delta: Buffer): Buffer {
  const d = new DeltaFileDecoder();
  const ev = d.push(delta);
  d.end();
  const op = ev.find((e) => e.kind === 'op');
  return op && op.kind === 'op' && op.op.kind === 'literal' ? Buffer.from(op.op.data) : Buffer.alloc(0);
}
