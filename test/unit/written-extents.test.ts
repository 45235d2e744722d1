/**
 * The written-extent map of in-place patching (core/extents.ts): a read of
 * the original image is split into image and saved pieces, and ranges saved
 * as zeros (UndoZero records) stay zeros however they are cut or joined.
 */
import { describe, expect, test } from 'vitest';
import { ExtentMap, SAVED_ZEROS } from '../../src/core/extents.js';

describe('ExtentMap (written ranges)', () => {
  test('a read is split at the written ranges, saved places offset into them', () => {
    const m = new ExtentMap();
    m.add(100, 50, 1000);
    m.add(200, 10, 2000);
    expect(m.resolve(90, 130)).toEqual([
      { from: 'image', at: 90, length: 10 },
      { from: 'saved', at: 1000, length: 50 },
      { from: 'image', at: 150, length: 50 },
      { from: 'saved', at: 2000, length: 10 },
      { from: 'image', at: 210, length: 10 },
    ]);
    expect(m.resolve(120, 10)).toEqual([{ from: 'saved', at: 1020, length: 10 }]);
  });

  test('neighbouring ranges join only where their saved bytes do', () => {
    const m = new ExtentMap();
    m.add(0, 10, 500);
    m.add(10, 10, 510);
    m.add(20, 10, 900);
    expect(m.count).toBe(2);
  });

  test('zero ranges: any piece of one reads as zeros, and they join each other but not saved bytes', () => {
    const m = new ExtentMap();
    m.add(0, 4096, 24);
    m.add(4096, 8192, SAVED_ZEROS);
    m.add(12288, 4096, SAVED_ZEROS);
    m.add(16384, 4096, 4200);
    expect(m.count).toBe(3);
    const segs = m.resolve(2048, 16384);
    expect(segs.map((s) => [s.from, s.length])).toEqual([
      ['saved', 2048],
      ['saved', 12288],
      ['saved', 2048],
    ]);
    expect(segs[0]!.at).toBe(24 + 2048);
    expect(segs[1]!.at).toBe(SAVED_ZEROS);
    expect(m.resolve(9000, 100)[0]!.at).toBe(SAVED_ZEROS);
    expect(segs[2]!.at).toBe(4200);
  });
});
