/**
 * SharedRead on real files: every consumer sees the whole image in order from
 * one read, at most `window` pieces are held however the consumers are paced,
 * and a consumer that stalls is detached (it goes on with its own reads and
 * still sees the right bytes) instead of holding the others up or growing
 * the buffer.
 */
import { mkdtemp, open, rm } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { openImage } from '../../src/io/image.js';
import { SharedRead } from '../../src/io/shared-read.js';
import { takeReadBuffer, wasmAvailable } from '../../src/core/adler-wasm.js';
import type { Piece } from '../../src/io/sparse.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const SIZE = 6 * MiB + 12345;

let dir: string;
let path: string;
let bytes: Buffer;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'resync-shared-read-'));
  path = join(dir, 'img');
  // Data, a 2 MiB hole, data, and a ragged tail.
  bytes = Buffer.alloc(SIZE);
  randomBytes(2 * MiB).copy(bytes, 0);
  randomBytes(SIZE - 4 * MiB).copy(bytes, 4 * MiB);
  const fh = await open(path, 'w');
  await fh.truncate(SIZE);
  await fh.write(bytes, 0, 2 * MiB, 0);
  await fh.write(bytes, 4 * MiB, SIZE - 4 * MiB, 4 * MiB);
  await fh.close();
});

afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Check each piece against the file as it arrives (a piece is only valid until the next is asked for); returns bytes covered. */
async function consume(it: AsyncIterable<Piece>, align: number, pause?: (i: number) => Promise<void>): Promise<number> {
  let pos = 0;
  let i = 0;
  for await (const p of it) {
    expect(p.position).toBe(pos);
    expect(p.position % align).toBe(0);
    const want = bytes.subarray(p.position, p.position + p.length);
    if (p.zero) expect(want.every((b) => b === 0)).toBe(true);
    else expect(Buffer.compare(p.data.subarray(0, p.length), want)).toBe(0);
    await pause?.(i);
    // Still intact after the others moved on while this one paused.
    if (!p.zero) expect(Buffer.compare(p.data.subarray(0, p.length), want)).toBe(0);
    pos += p.length;
    i++;
  }
  return pos;
}

describe('SharedRead', () => {
  test('three consumers read the image once, in order, within the window', async () => {
    const img = await openImage(path);
    try {
      const s = new SharedRead(img, { chunk: MiB, align: 64 * KiB, window: 3, detachAfterMs: 10_000 });
      const its = [s.consumer(), s.consumer(), s.consumer()];
      s.start();
      // Uneven pacing: the window, not the slowest consumer's speed, bounds what is held.
      const got = await Promise.all(its.map((it, k) => consume(it, 64 * KiB, k === 1 ? () => sleep(5) : undefined)));
      expect(got).toEqual([SIZE, SIZE, SIZE]);
      // The last consumer out gave the read buffers (slots of the Adler-32 module's memory) back.
      if (wasmAvailable()) {
        const slots = [1, 2, 3, 4].map(() => takeReadBuffer(MiB));
        expect(slots.every((x) => x !== null)).toBe(true);
        for (const x of slots) x?.release();
      }
      // The hole was not read; the rest once for all three.
      expect(s.stats.sharedBytes).toBe(SIZE - 2 * MiB);
      expect(s.stats.ownBytes).toBe(0);
      expect(s.stats.detached).toBe(0);
      expect(s.stats.maxHeld).toBeLessThanOrEqual(3);
    } finally {
      await img.fh.close();
    }
  });

  test('a stalled consumer is detached: the others finish first, it still sees every byte, memory stays at the window', async () => {
    const img = await openImage(path);
    try {
      const s = new SharedRead(img, { chunk: 512 * KiB, align: 4 * KiB, window: 2, detachAfterMs: 50 });
      const order: string[] = [];
      const [a, b] = [s.consumer(), s.consumer()];
      s.start();
      const fast = consume(a, 4 * KiB).then((n) => (order.push('fast'), n));
      const slow = consume(b, 4 * KiB, (i) => (i === 1 ? sleep(600) : Promise.resolve())).then((n) => (order.push('slow'), n));
      expect(await Promise.all([fast, slow])).toEqual([SIZE, SIZE]);
      s.close();
      expect(order).toEqual(['fast', 'slow']);
      expect(s.stats.detached).toBe(1);
      expect(s.stats.maxHeld).toBeLessThanOrEqual(2);
      // The slow one read the rest itself (holes excepted): from after its second piece to the end.
      expect(s.stats.ownBytes).toBe(SIZE - 2 * MiB - 1024 * KiB);
    } finally {
      await img.fh.close();
    }
  });

  test('a consumer that stops early no longer paces the others', async () => {
    const img = await openImage(path);
    try {
      const s = new SharedRead(img, { chunk: MiB, align: 4 * KiB, window: 2, detachAfterMs: 60_000 });
      const [a, b] = [s.consumer(), s.consumer()];
      s.start();
      const quitter = (async () => {
        for await (const p of a) if (p.position >= MiB) break;
      })();
      const t0 = performance.now();
      const [n] = await Promise.all([consume(b, 4 * KiB), quitter]);
      s.close();
      expect(n).toBe(SIZE);
      expect(performance.now() - t0).toBeLessThan(30_000);
      expect(s.stats.detached).toBe(0);
    } finally {
      await img.fh.close();
    }
  });

  test('consumers must all join before the read starts', async () => {
    const img = await openImage(path);
    try {
      const s = new SharedRead(img, { chunk: MiB, align: 4 * KiB, window: 2, detachAfterMs: 100 });
      const it = s.consumer()[Symbol.asyncIterator]();
      s.start();
      await it.next();
      expect(() => s.consumer()).toThrow(/after it started/);
      await it.return?.();
      s.close();
    } finally {
      await img.fh.close();
    }
  });
});
