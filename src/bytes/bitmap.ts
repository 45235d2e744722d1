/**
 * Bit sets as the wire carries them (NeedRegions, SubNeed): bit i is bit
 * (i & 7) of byte i >>> 3, least significant first. Pure.
 */

/** Bytes of a bitmap of `n` bits. */
export function bitmapBytes(n: number): number {
  return Math.ceil(n / 8);
}

/** Whether bit `i` is set (a bit past the end reads as clear). */
export function testBit(bm: Uint8Array, i: number): boolean {
  return (((bm[i >>> 3] ?? 0) >>> (i & 7)) & 1) === 1;
}

/** Set bit `i`; the bitmap must hold it. */
export function setBit(bm: Uint8Array, i: number): void {
  bm[i >>> 3]! |= 1 << (i & 7);
}
