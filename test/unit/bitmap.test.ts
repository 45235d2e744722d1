/** The wire's bit sets (NeedRegions, SubNeed): bit i is bit (i & 7) of byte i >>> 3, least significant first. */
import { describe, expect, test } from 'vitest';
import { bitmapBytes, setBit, testBit } from '../../src/bytes/bitmap.js';

describe('bitmap', () => {
  test('bit order matches the wire: bit 0 is the low bit of byte 0, bit 9 bit 1 of byte 1', () => {
    const bm = new Uint8Array(bitmapBytes(10));
    expect(bm.length).toBe(2);
    setBit(bm, 0);
    setBit(bm, 9);
    expect([...bm]).toEqual([0x01, 0x02]);
    expect(testBit(bm, 0)).toBe(true);
    expect(testBit(bm, 1)).toBe(false);
    expect(testBit(bm, 9)).toBe(true);
  });

  test('sizes round up to whole bytes', () => {
    expect([0, 1, 8, 9, 16, 17].map(bitmapBytes)).toEqual([0, 1, 1, 2, 2, 3]);
  });

  test('a bit past the end reads as clear', () => {
    expect(testBit(new Uint8Array([0xff]), 8)).toBe(false);
  });
});
