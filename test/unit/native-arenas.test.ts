import { expect, test } from 'vitest';
import { nativeHelper } from '../../src/core/native.js';

test('the native helper caps malloc arenas where the C library has the setting (glibc), and refuses a count below 1', () => {
  const h = nativeHelper();
  if (process.platform !== 'linux' || !h) return;
  expect(typeof h.capArenas).toBe('function');
  // On glibc the setting applies (elsewhere: 0). A larger cap than the CLI's leaves the tests' threads alone.
  const glibc = (process.report.getReport() as { header?: { glibcVersionRuntime?: string } }).header?.glibcVersionRuntime !== undefined;
  expect(h.capArenas!(64)).toBe(glibc ? 1 : 0);
  expect(() => h.capArenas!(0)).toThrow(TypeError);
  expect(() => (h.capArenas as unknown as (n: unknown) => number)('2')).toThrow(TypeError);
});
