/** The --bwlimit token bucket: rate held over a transfer, bursts bounded, bad rates refused. */
import { describe, expect, test } from 'vitest';
import { Throttle } from '../../src/net/throttle.js';

const MB = 1024 * 1024;

async function timed(fn: () => Promise<void>): Promise<number> {
  const t0 = performance.now();
  await fn();
  return performance.now() - t0;
}

describe('Throttle', () => {
  test('1 MiB in 64 KiB writes at 4 MiB/s takes about 250 ms', async () => {
    const t = new Throttle(4 * MB);
    const ms = await timed(async () => {
      for (let i = 0; i < 16; i++) await t.take(64 * 1024);
    });
    expect(ms).toBeGreaterThanOrEqual(200);
    expect(ms).toBeLessThan(1500);
  });

  test('one large take waits for all of it', async () => {
    const t = new Throttle(4 * MB);
    const ms = await timed(() => t.take(MB));
    expect(ms).toBeGreaterThanOrEqual(200);
    expect(ms).toBeLessThan(1500);
  });

  test('many tiny takes keep the rate without a timer per write', async () => {
    const t = new Throttle(1 * MB);
    // 256 KiB in 100-byte writes: ~250 ms at 1 MiB/s.
    const ms = await timed(async () => {
      for (let sent = 0; sent < 256 * 1024; sent += 100) await t.take(100);
    });
    expect(ms).toBeGreaterThanOrEqual(200);
    expect(ms).toBeLessThan(2000);
  });

  test('concurrent takers share the rate', async () => {
    const t = new Throttle(4 * MB);
    const ms = await timed(async () => {
      await Promise.all([t.take(512 * 1024), t.take(512 * 1024)]);
    });
    expect(ms).toBeGreaterThanOrEqual(200);
  });

  test('idle time saves up at most one burst', async () => {
    const t = new Throttle(4 * MB, 64 * 1024);
    await new Promise((r) => setTimeout(r, 100));
    // The burst covers 64 KiB; the remaining 960 KiB still take ~234 ms.
    const ms = await timed(() => t.take(MB));
    expect(ms).toBeGreaterThanOrEqual(180);
  });

  test('zero-byte takes return at once', async () => {
    const t = new Throttle(1);
    expect(await timed(() => t.take(0))).toBeLessThan(50);
  });

  test.each([0, -1, Number.NaN, Number.POSITIVE_INFINITY])('rate %s is refused with ERR_PARAM', (rate) => {
    expect(() => new Throttle(rate)).toThrow(expect.objectContaining({ code: 'ERR_PARAM' }));
  });
});
