/**
 * Interop with the real `rdiff` (librsync) binary, both directions:
 *  - signatures: ours are byte-identical to rdiff's for every variant and for
 *    defaulted, explicit and minimum strong lengths and odd block lengths;
 *  - rdiff signature -> resync delta -> rdiff patch rebuilds the new file, and
 *    our ops equal rdiff's once adjacent literals are merged (rdiff cuts
 *    literals where its I/O buffers end; the matches are the same);
 *  - resync signature -> rdiff delta -> resync patch rebuilds the new file;
 *  - tiny and empty files, and the CLI's --format rdiff when dist/ is built.
 *
 * Skipped, with a message, only when `rdiff` is not on PATH (CI installs it).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { applyScenario, generateImage, type Scenario } from '../../src/testing/workload.js';
import { rdiffDeltaFile, rdiffPatchFile, rdiffSignatureFile } from '../../src/api/rdiff.js';
import type { DeltaOp } from '../../src/core/ops.js';
import { RDIFF_SIG_TYPES, type RdiffSigType } from '../../src/rdiff/constants.js';
import { decodeRdiffDelta, encodeRdiffDelta } from '../../src/rdiff/delta.js';

const HAVE_RDIFF = spawnSync('rdiff', ['--version'], { stdio: 'ignore' }).status === 0;
if (!HAVE_RDIFF) console.warn('test/integration/rdiff.test.ts: `rdiff` is not on PATH, skipping the librsync interop tests (apt-get install rdiff)');

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const CLI = join(ROOT, 'dist/src/cli/main.js');
const HAVE_CLI = existsSync(CLI) && existsSync(join(ROOT, 'dist/src/api/rdiff.js'));
const KiB = 1024;

/** rdiff's -H/-R flags for a variant. */
const RDIFF_FLAGS: Record<RdiffSigType, string[]> = {
  md4: ['-H', 'md4', '-R', 'rollsum'],
  blake2: ['-H', 'blake2', '-R', 'rollsum'],
  'rk-md4': ['-H', 'md4', '-R', 'rabinkarp'],
  'rk-blake2': ['-H', 'blake2', '-R', 'rabinkarp'],
};

let work: string;
let basis: string;
let basisBytes: Buffer;
const targets = new Map<Scenario, { path: string; bytes: Buffer }>();
let seq = 0;

/** A fresh path in the work dir (rdiff refuses to overwrite without -f). */
function fresh(tag: string): string {
  return join(work, `${seq++}-${tag}`);
}

function rdiff(...args: string[]): void {
  execFileSync('rdiff', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

/** Merge adjacent literals so op lists compare independent of where literal data was cut. */
function normalize(ops: DeltaOp[]): string[] {
  const out: string[] = [];
  let lit = 0;
  for (const op of ops) {
    if (op.kind === 'literal') {
      lit += op.data.length;
      continue;
    }
    if (lit) out.push(`L${lit}`);
    lit = 0;
    out.push(`C${op.offset}+${op.length}`);
  }
  if (lit) out.push(`L${lit}`);
  return out;
}

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'resync-rdiff-'));
  // Not a multiple of any block length used: the last block is short.
  basisBytes = generateImage(2 * 1024 * KiB + 777, 11);
  basis = join(work, 'basis');
  await writeFile(basis, basisBytes);
  for (const sc of ['scattered', 'shifted', 'mixed'] as const) {
    const bytes = applyScenario(basisBytes, sc, 5);
    const path = join(work, `new-${sc}`);
    await writeFile(path, bytes);
    targets.set(sc, { path, bytes });
  }
});

afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

describe.skipIf(!HAVE_RDIFF)('rdiff interop', () => {
  test('rdiff writes RabinKarp + BLAKE2 by default, and so do we', async () => {
    const theirs = fresh('sig');
    const ours = fresh('sig');
    rdiff('signature', basis, theirs);
    const r = await rdiffSignatureFile(basis, ours);
    expect(r.sigType).toBe('rk-blake2');
    const t = await readFile(theirs);
    expect(t.readUInt32BE(0)).toBe(0x72730147);
    expect(Buffer.compare(await readFile(ours), t)).toBe(0);
  });

  test.each(RDIFF_SIG_TYPES)('%s: signatures are byte-identical to rdiff for several block and strong lengths', async (sigType) => {
    const cases: Array<{ b?: number; s?: number }> = [{}, { b: 1000, s: 8 }, { b: 4096, s: -1 }, { b: 333, s: 3 }];
    for (const { b, s } of cases) {
      const theirs = fresh('sig');
      const ours = fresh('sig');
      const flags = [...RDIFF_FLAGS[sigType], ...(b !== undefined ? ['-b', String(b)] : []), ...(s !== undefined ? ['-S', String(s)] : [])];
      rdiff(...flags, 'signature', basis, theirs);
      await rdiffSignatureFile(basis, ours, { sigType, blockSize: b, strongLen: s });
      const t = await readFile(theirs);
      const o = await readFile(ours);
      expect(o.subarray(0, 12).toString('hex'), `header for -b ${b} -S ${s}`).toBe(t.subarray(0, 12).toString('hex'));
      expect(Buffer.compare(o, t), `${sigType} -b ${b} -S ${s}`).toBe(0);
    }
  });

  test.each(RDIFF_SIG_TYPES)('%s: rdiff signature -> resync delta -> rdiff patch, same matches as rdiff delta', async (sigType) => {
    const sig = fresh('sig');
    rdiff(...RDIFF_FLAGS[sigType], '-b', '2048', 'signature', basis, sig);
    for (const [sc, t] of targets) {
      const ours = fresh('delta');
      const theirs = fresh('delta');
      const out = fresh('out');
      const r = await rdiffDeltaFile(sig, t.path, ours);
      rdiff('patch', basis, ours, out);
      expect(Buffer.compare(await readFile(out), t.bytes), `${sigType} ${sc}`).toBe(0);
      rdiff('delta', sig, t.path, theirs);
      const oursOps = normalize(decodeRdiffDelta(await readFile(ours)));
      expect(oursOps, `${sigType} ${sc}`).toEqual(normalize(decodeRdiffDelta(await readFile(theirs))));
      expect(r.matchedBytes + r.literalBytes).toBe(t.bytes.length);
      expect(r.literalBytes).toBeLessThan(t.bytes.length / 4);
    }
  });

  test.each(RDIFF_SIG_TYPES)('%s: long runs of one byte value the basis lacks (stepped over, not rolled) give rdiff\'s matches', async (sigType) => {
    // Runs of zeros and of 0xff longer than any block, between pieces of the
    // basis and at the ends; the basis holds no block of either value until
    // the second round, where a zero block makes the zero runs match.
    const piece = (at: number, n: number): Buffer => basisBytes.subarray(at, at + n);
    const run = (v: number, n: number): Buffer => Buffer.alloc(n, v);
    const target = Buffer.concat([run(0, 70_001), piece(5000, 9000), run(0xff, 200_000), piece(100_000, 3333), run(0, 300_007), piece(40_000, 20_000), run(0xff, 5000)]);
    for (const zeroBlock of [false, true]) {
      const base = Buffer.from(basisBytes);
      if (zeroBlock) base.fill(0, 8192, 8192 + 4096);
      const basisPath = fresh('basis');
      const targetPath = fresh('target');
      await writeFile(basisPath, base);
      await writeFile(targetPath, target);
      const sig = fresh('sig');
      rdiff(...RDIFF_FLAGS[sigType], '-b', '2048', 'signature', basisPath, sig);
      const ours = fresh('delta');
      const theirs = fresh('delta');
      const out = fresh('out');
      await rdiffDeltaFile(sig, targetPath, ours);
      rdiff('delta', sig, targetPath, theirs);
      rdiff('patch', basisPath, ours, out);
      expect(Buffer.compare(await readFile(out), target), `${sigType} zero block ${zeroBlock}`).toBe(0);
      const oursOps = normalize(decodeRdiffDelta(await readFile(ours)));
      expect(oursOps, `${sigType} zero block ${zeroBlock}`).toEqual(normalize(decodeRdiffDelta(await readFile(theirs))));
      expect(oursOps.some((o) => o.startsWith('C')), 'the basis pieces are found').toBe(true);
    }
  });

  test('a delta of many short copies, anywhere in the basis, patches as rdiff patches it', async () => {
    // Short copies come from a window of the basis read at once; the test
    // crosses its ends, goes back, and mixes in long copies and literals.
    let x = 12345;
    const rnd = (n: number): number => {
      x = (Math.imul(x, 1103515245) + 12345) >>> 0;
      return x % n;
    };
    const ops: DeltaOp[] = [];
    for (let i = 0; i < 20_000; i++) {
      const r = rnd(100);
      const length = r < 90 ? 1 + rnd(64) : r < 97 ? 1 + rnd(40_000) : 32_768 + rnd(200_000);
      if (r === 99) ops.push({ kind: 'literal', data: new Uint8Array(1 + rnd(300)).fill(7) });
      else ops.push({ kind: 'copy', offset: rnd(basisBytes.length - length), length });
    }
    const delta = fresh('delta');
    await writeFile(delta, encodeRdiffDelta(ops));
    const ours = fresh('out');
    const theirs = fresh('out');
    await rdiffPatchFile(basis, delta, ours);
    rdiff('patch', basis, delta, theirs);
    expect(Buffer.compare(await readFile(ours), await readFile(theirs))).toBe(0);
  });

  test.each(RDIFF_SIG_TYPES)('%s: resync signature -> rdiff delta -> resync patch', async (sigType) => {
    const sig = fresh('sig');
    await rdiffSignatureFile(basis, sig, { sigType, blockSize: 1024 });
    for (const [sc, t] of targets) {
      const delta = fresh('delta');
      const out = fresh('out');
      rdiff('delta', sig, t.path, delta);
      const r = await rdiffPatchFile(basis, delta, out);
      expect(r.verified).toBe(false);
      expect(r.imageSize).toBe(t.bytes.length);
      expect(Buffer.compare(await readFile(out), t.bytes), `${sigType} ${sc}`).toBe(0);
    }
  });

  test('tiny, empty and block-aligned files in both directions', async () => {
    const d = join(work, 'tiny');
    await mkdir(d);
    const pattern = (n: number, k: number) => Buffer.from(Array.from({ length: n }, (_, i) => (i * 31 + k * 7 + (i >> 5)) & 0xff));
    const pairs: Array<[Buffer, Buffer]> = [
      [Buffer.alloc(0), Buffer.alloc(0)],
      [Buffer.alloc(0), pattern(100, 1)],
      [pattern(100, 1), Buffer.alloc(0)],
      [pattern(1, 2), pattern(1, 2)],
      [pattern(256, 3), pattern(256, 3)],
      [pattern(512, 3), Buffer.concat([pattern(512, 3).subarray(256), pattern(512, 3).subarray(0, 256)])],
      [pattern(1000, 4), Buffer.concat([Buffer.from('head'), pattern(1000, 4).subarray(0, 900), Buffer.from('tail')])],
      [pattern(5000, 5), Buffer.concat([pattern(5000, 5).subarray(0, 2000), pattern(5000, 5).subarray(2100)])],
    ];
    let k = 0;
    for (const [a, b] of pairs) {
      const p = (s: string) => join(d, `${k}-${s}`);
      await writeFile(p('a'), a);
      await writeFile(p('b'), b);
      for (const sigType of ['md4', 'rk-blake2'] as const) {
        const tag = `${k} ${a.length}->${b.length} ${sigType}`;
        // rdiff signature -> resync delta -> rdiff patch
        rdiff(...RDIFF_FLAGS[sigType], 'signature', p('a'), p(`${sigType}-rsig`));
        await rdiffSignatureFile(p('a'), p(`${sigType}-sig`), { sigType });
        expect(Buffer.compare(await readFile(p(`${sigType}-sig`)), await readFile(p(`${sigType}-rsig`))), tag).toBe(0);
        await rdiffDeltaFile(p(`${sigType}-rsig`), p('b'), p(`${sigType}-delta`));
        rdiff('patch', p('a'), p(`${sigType}-delta`), p(`${sigType}-out1`));
        expect(Buffer.compare(await readFile(p(`${sigType}-out1`)), b), tag).toBe(0);
        // resync signature -> rdiff delta -> resync patch
        rdiff('delta', p(`${sigType}-sig`), p('b'), p(`${sigType}-rdelta`));
        await rdiffPatchFile(p('a'), p(`${sigType}-rdelta`), p(`${sigType}-out2`));
        expect(Buffer.compare(await readFile(p(`${sigType}-out2`)), b), tag).toBe(0);
      }
      k++;
    }
  });

  test('patching onto the basis path replaces it only at the end', async () => {
    const t = targets.get('shifted')!;
    const copy = fresh('basis-copy');
    await writeFile(copy, basisBytes);
    const sig = fresh('sig');
    const delta = fresh('delta');
    rdiff('signature', copy, sig);
    rdiff('delta', sig, t.path, delta);
    await rdiffPatchFile(copy, delta, copy);
    expect(Buffer.compare(await readFile(copy), t.bytes)).toBe(0);
  });

  test.skipIf(!HAVE_CLI)('resync CLI with --format rdiff, mixed with rdiff', async () => {
    const t = targets.get('mixed')!;
    const sig = fresh('sig');
    const delta = fresh('delta');
    const out = fresh('out');
    const run = (...args: string[]) => JSON.parse(execFileSync(process.execPath, [CLI, '--json', ...args], { encoding: 'utf8' }).trim().split('\n').pop()!);
    const s = run('signature', '--format', 'rdiff', '--sig-type', 'rk-md4', '-b', '4K', '-S', '12', basis, sig);
    expect(s).toMatchObject({ ok: true, format: 'rdiff', sigType: 'rk-md4', blockSize: 4096, strongLen: 12 });
    const theirs = fresh('sig');
    rdiff(...RDIFF_FLAGS['rk-md4'], '-b', '4096', '-S', '12', 'signature', basis, theirs);
    expect(Buffer.compare(await readFile(sig), await readFile(theirs))).toBe(0);
    rdiff('delta', sig, t.path, delta);
    const p = run('patch', '--format', 'rdiff', basis, delta, out);
    expect(p).toMatchObject({ ok: true, format: 'rdiff', verified: false, imageSize: t.bytes.length });
    expect(Buffer.compare(await readFile(out), t.bytes)).toBe(0);
    const ourDelta = fresh('delta');
    const out2 = fresh('out');
    expect(run('delta', '--format', 'rdiff', theirs, t.path, ourDelta)).toMatchObject({ ok: true });
    rdiff('patch', basis, ourDelta, out2);
    expect(Buffer.compare(await readFile(out2), t.bytes)).toBe(0);
  });
});
