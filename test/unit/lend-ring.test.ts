import { describe, expect, test } from 'vitest';
import { LendRing } from '../../src/bytes/lend-ring.js';

describe('LendRing', () => {
  test('lends in order, wraps round once the oldest ranges are back, and never lends a range twice', () => {
    const r = new LendRing(100);
    const a = r.lend(40)!;
    const b = r.lend(40)!;
    expect(r.lend(30)).toBeNull(); // 20 left at the end, none before a
    expect(r.misses).toBe(1);
    a.fill(1);
    b.fill(2);
    r.giveBack(a);
    const c = r.lend(30)!; // wraps to the start, where a was
    expect(c.byteOffset).toBe(a.byteOffset);
    c.fill(3);
    expect(b.every((x) => x === 2)).toBe(true);
    // Behind c only the 10 bytes up to b are free: the end past b waits until the ring wraps again.
    expect(r.lend(20)).toBeNull();
    expect(r.lend(10)!.byteOffset).toBe(c.byteOffset + 30);
    expect(r.inUse).toBe(80);
  });

  test('a range given back out of order is lent again only once the older ones are back', () => {
    const r = new LendRing(90);
    const a = r.lend(30)!;
    const b = r.lend(30)!;
    const c = r.lend(30)!;
    r.giveBack(b);
    expect(r.lend(30)).toBeNull(); // b's room lies behind a, which is still out
    r.giveBack(a);
    const d = r.lend(60)!;
    expect(d.byteOffset).toBe(a.byteOffset);
    d.fill(9);
    r.giveBack(c);
    r.giveBack(d);
    expect(r.inUse).toBe(0);
    expect(r.lend(90)!.length).toBe(90);
  });

  test('owns only its own memory; sizes it cannot hold are refused', () => {
    const r = new LendRing(64);
    expect(r.lend(0)).toBeNull();
    expect(r.lend(65)).toBeNull();
    const a = r.lend(8)!;
    expect(r.owns(a)).toBe(true);
    expect(r.owns(new Uint8Array(8))).toBe(false);
  });

  test('starts small and grows, once nothing is lent, to what the misses needed, never past its size', () => {
    const KiB = 1024;
    const r = new LendRing(1024 * KiB);
    const a = r.lend(200 * KiB)!;
    expect(r.lend(200 * KiB)).toBeNull(); // 256 KiB to start with
    r.giveBack(a);
    const b = r.lend(200 * KiB)!;
    const c = r.lend(200 * KiB)!; // grown to hold both
    expect(c.byteOffset).toBe(b.byteOffset + 200 * KiB);
    r.giveBack(b);
    r.giveBack(c);
    expect(r.lend(1024 * KiB)).toBeNull();
    expect(r.lend(1024 * KiB)!.length).toBe(1024 * KiB);
    expect(r.lend(1)).toBeNull();
  });

  test('reserve takes the whole size at once, even while some is lent, and a ring at its size is never made again', () => {
    const KiB = 1024;
    const r = new LendRing(1024 * KiB);
    const a = r.lend(10 * KiB)!;
    a.fill(0xaa);
    r.reserve();
    // What is lent stays where it is (the small ring); new lends come from the whole size at once.
    expect(r.owns(a)).toBe(true);
    const big = r.lend(900 * KiB)!;
    expect(big).not.toBeNull();
    expect(big.buffer).not.toBe(a.buffer);
    big.fill(0x55);
    expect(a.every((x) => x === 0xaa)).toBe(true);
    expect(r.misses).toBe(0);
    expect(r.inUse).toBe(910 * KiB);
    r.giveBack(a);
    r.giveBack(a); // twice: counted once
    expect(r.owns(a)).toBe(false);
    expect(r.inUse).toBe(900 * KiB);
    r.giveBack(big);
    expect(r.inUse).toBe(0);
    const b = r.lend(600 * KiB)!;
    const c = r.lend(400 * KiB)!;
    expect(c.buffer).toBe(b.buffer);
    expect(b.buffer).toBe(big.buffer);
    // A miss past the size, then all given back: the same memory is lent again.
    expect(r.lend(100 * KiB)).toBeNull();
    r.giveBack(b);
    r.giveBack(c);
    expect(r.lend(8)!.buffer).toBe(b.buffer);
    const fresh = new LendRing(512 * KiB);
    fresh.reserve();
    expect(fresh.lend(500 * KiB)!.length).toBe(500 * KiB);
  });
});
