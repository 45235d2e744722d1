import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  SCENARIOS,
  applyScenario,
  generateImage,
  imageBytes,
  imageLayout,
  makePair,
  planScenario,
  randomBytes,
  writeImage,
  writeScenario,
} from '../../src/testing/workload.js';

const MiB = 1024 * 1024;

let dir = '';
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'resync-workload-'));
});
afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

function countDiff(a: Uint8Array, b: Uint8Array): number {
  let n = Math.abs(a.length - b.length);
  const len = Math.min(a.length, b.length);
  for (let i = 0; i < len; i++) if (a[i] !== b[i]) n++;
  return n;
}

describe('randomBytes', () => {
  test('deterministic, seed-dependent', () => {
    expect(randomBytes(1, 1000).equals(randomBytes(1, 1000))).toBe(true);
    expect(randomBytes(1, 1000).equals(randomBytes(2, 1000))).toBe(false);
    expect(randomBytes(7, 0).length).toBe(0);
  });

  test('streamOffset seeks within the same stream', () => {
    const whole = randomBytes(42, 5000);
    for (const [off, len] of [
      [0, 5000],
      [1, 17],
      [15, 1],
      [16, 33],
      [17, 4000],
      [4095, 905],
    ] as const) {
      expect(randomBytes(42, len, off).equals(whole.subarray(off, off + len))).toBe(true);
    }
  });

  test('looks random', () => {
    const b = randomBytes(3, 1 << 16);
    const counts = new Array<number>(256).fill(0);
    for (const x of b) counts[x] = (counts[x] ?? 0) + 1;
    expect(Math.min(...counts)).toBeGreaterThan(150);
    expect(Math.max(...counts)).toBeLessThan(370);
  });
});

describe('generateImage', () => {
  test('deterministic, seed-dependent', () => {
    const a = generateImage(MiB + 17, 5);
    expect(a.length).toBe(MiB + 17);
    expect(generateImage(MiB + 17, 5).equals(a)).toBe(true);
    expect(generateImage(MiB + 17, 6).equals(a)).toBe(false);
    expect(generateImage(0, 5).length).toBe(0);
  });

  test('imageBytes returns any slice of the image', () => {
    const size = 3 * MiB + 333;
    const img = generateImage(size, 8);
    for (const [off, len] of [
      [0, 0],
      [0, size],
      [1, 5000],
      [4095, 2],
      [MiB - 7, MiB + 300],
      [size - 10, 10],
    ] as const) {
      expect(imageBytes(size, 8, off, len).equals(img.subarray(off, off + len))).toBe(true);
    }
    expect(() => imageBytes(size, 8, size - 1, 2)).toThrow(RangeError);
  });

  test('layout mixes zero, random, text and pattern extents', () => {
    const layout = imageLayout(64 * MiB, 11);
    const kinds = new Set(layout.extents.map((e) => e.kind));
    expect([...kinds].sort()).toEqual(['pattern', 'random', 'text', 'zero']);
    let pos = 0;
    for (const e of layout.extents) {
      expect(e.start).toBe(pos);
      expect(e.start % 4096).toBe(0);
      pos += e.length;
    }
    expect(pos).toBe(64 * MiB);
  });

  test('text extents hold text-like records', () => {
    const size = 64 * MiB;
    const layout = imageLayout(size, 11);
    const text = layout.extents.find((e) => e.kind === 'text');
    expect(text).toBeDefined();
    if (!text) return;
    const img = generateImage(size, 11);
    const s = img.subarray(text.start, text.start + Math.min(text.length, 4096)).toString('latin1');
    expect(s).toMatch(/^[0-9a-f]{8} [\x20-\x7e]+\n/);
  });
});

describe('scenarios in memory', () => {
  const size = 8 * MiB;
  const basis = generateImage(size, 21);

  test('identical', () => {
    const t = applyScenario(basis, 'identical', 1);
    expect(t.equals(basis)).toBe(true);
    expect(planScenario(size, 'identical', 1).stats).toMatchObject({ changedBytes: 0, edits: 0, targetSize: size });
  });

  test('deterministic, seed-dependent', () => {
    for (const s of SCENARIOS) {
      if (s === 'identical') continue;
      const a = applyScenario(basis, s, 1);
      expect(applyScenario(basis, s, 1).equals(a), s).toBe(true);
      expect(applyScenario(basis, s, 2).equals(a), s).toBe(false);
    }
  });

  test('scattered overwrites about 1% in aligned 4 KiB pages', () => {
    const plan = planScenario(size, 'scattered', 3);
    const t = applyScenario(basis, 'scattered', 3);
    expect(t.length).toBe(size);
    const diff = countDiff(basis, t);
    expect(diff).toBeGreaterThan(size * 0.005);
    expect(diff).toBeLessThan(size * 0.02);
    expect(plan.stats.changedBytes).toBeGreaterThan(size * 0.005);
    expect(plan.stats.changedBytes).toBeLessThan(size * 0.02);
    for (const e of plan.edits) {
      expect(e.pos % 4096).toBe(0);
      expect(e.ins).toBe(4096);
      expect(e.del).toBe(4096);
    }
  });

  test('shifted changes the size by insertions minus deletions', () => {
    const plan = planScenario(size, 'shifted', 4);
    const t = applyScenario(basis, 'shifted', 4);
    expect(plan.stats.edits).toBeGreaterThanOrEqual(3);
    expect(plan.stats.insertedBytes + plan.stats.deletedBytes).toBeGreaterThan(0);
    expect(t.length).toBe(size + plan.stats.insertedBytes - plan.stats.deletedBytes);
    expect(plan.stats.targetSize).toBe(t.length);
    for (const e of plan.edits) {
      expect(e.kind === 'insert' ? e.ins : e.del).toBeGreaterThanOrEqual(1);
      expect(e.kind === 'insert' ? e.ins : e.del).toBeLessThanOrEqual(300);
      expect(e.kind === 'insert' ? e.del : e.ins).toBe(0);
    }
    // Bytes before the first edit are untouched; bytes after the last are shifted.
    const first = plan.edits[0];
    const last = plan.edits[plan.edits.length - 1];
    if (!first || !last) throw new Error('no edits');
    expect(t.subarray(0, first.pos).equals(basis.subarray(0, first.pos))).toBe(true);
    const tailLen = size - (last.pos + last.del);
    expect(t.subarray(t.length - tailLen).equals(basis.subarray(size - tailLen))).toBe(true);
  });

  test('shifted scales with size (about one edit per 8 MiB)', () => {
    expect(planScenario(256 * MiB, 'shifted', 1).stats.edits).toBe(32);
    expect(planScenario(4096, 'shifted', 1).stats.edits).toBe(3);
  });

  test('mixed grows the image and changes a few percent', () => {
    const plan = planScenario(size, 'mixed', 5);
    const t = applyScenario(basis, 'mixed', 5);
    expect(t.length).toBe(plan.stats.targetSize);
    expect(t.length).toBeGreaterThan(size + 60 * 1024);
    expect(plan.stats.changedBytes).toBeGreaterThan(size * 0.025);
    expect(plan.stats.changedBytes).toBeLessThan(size * 0.05);
    expect(plan.edits.some((e) => e.kind === 'overwrite' && e.ins > 100_000)).toBe(true);
    expect(plan.edits.some((e) => e.kind === 'delete' || (e.kind === 'insert' && e.ins <= 300))).toBe(true);
    for (let i = 1; i < plan.edits.length; i++) {
      const a = plan.edits[i - 1];
      const b = plan.edits[i];
      if (!a || !b) throw new Error('hole');
      expect(a.pos + a.del).toBeLessThanOrEqual(b.pos);
      expect(a.pos).toBeLessThan(b.pos);
    }
  });

  test('different is unrelated content of the same size', () => {
    const t = applyScenario(basis, 'different', 6);
    expect(t.length).toBe(size);
    expect(countDiff(basis, t)).toBeGreaterThan(size * 0.99);
  });
});

describe('streaming matches in-memory', () => {
  test.each([0, 1, 4095, MiB + 17])('size %i', async (size) => {
    const seed = 1000 + size;
    const basisPath = join(dir, `basis-${size}.img`);
    await writeImage(basisPath, size, seed);
    const basis = await readFile(basisPath);
    expect(basis.equals(generateImage(size, seed))).toBe(true);
    for (const s of SCENARIOS) {
      const targetPath = join(dir, `target-${size}-${s}.img`);
      const stats = await writeScenario(basisPath, targetPath, s, seed + 1);
      const expected = applyScenario(basis, s, seed + 1);
      const got = await readFile(targetPath);
      expect(got.length, s).toBe(expected.length);
      expect(got.equals(expected), s).toBe(true);
      expect(stats, s).toEqual(planScenario(size, s, seed + 1).stats);
      await rm(targetPath);
    }
    await rm(basisPath);
  });

  test('makePair', async () => {
    const sub = join(dir, 'pair');
    await import('node:fs/promises').then((fs) => fs.mkdir(sub));
    const { basis, target, stats } = await makePair(sub, 'mixed', 2 * MiB + 5, 77);
    const b = await readFile(basis);
    const t = await readFile(target);
    expect(b.equals(generateImage(2 * MiB + 5, 77))).toBe(true);
    expect(t.equals(applyScenario(b, 'mixed', 77))).toBe(true);
    expect(stats.basisSize).toBe(b.length);
    expect(stats.targetSize).toBe(t.length);
    await rm(sub, { recursive: true });
  });
});

describe('large images on disk', () => {
  test('zero extents are holes (64 MiB)', async () => {
    const p = join(dir, 'sparse.img');
    await writeImage(p, 64 * MiB, 9);
    const st = await stat(p);
    expect(st.size).toBe(64 * MiB);
    expect(st.blocks * 512).toBeLessThan(st.size);
    const t = join(dir, 'sparse-target.img');
    await writeScenario(p, t, 'scattered', 9);
    const tst = await stat(t);
    expect(tst.size).toBe(64 * MiB);
    expect(tst.blocks * 512).toBeLessThan(tst.size);
    await rm(p);
    await rm(t);
  });

  test('writing a 256 MiB image streams (bounded memory)', async () => {
    const p = join(dir, 'big.img');
    const before = process.memoryUsage().rss;
    let peak = before;
    const timer = setInterval(() => {
      peak = Math.max(peak, process.memoryUsage().rss);
    }, 5);
    try {
      await writeImage(p, 256 * MiB, 13);
    } finally {
      clearInterval(timer);
    }
    peak = Math.max(peak, process.memoryUsage().rss);
    expect((await stat(p)).size).toBe(256 * MiB);
    expect(peak - before).toBeLessThan(100 * 1e6);
    await rm(p);
  });
});
