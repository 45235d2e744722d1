/** The CLI's option checks (src/cli/args.ts): every bad value is an ERR_PARAM naming the option. */
import { describe, expect, test } from 'vitest';
import { MAX_TIMEOUT_SECONDS, intOption, secondsOption, sizeOption } from '../../src/cli/options.js';

function code(f: () => unknown): string | undefined {
  try {
    f();
  } catch (e) {
    expect((e as Error).message).toMatch(/--\w/);
    return (e as { code?: string }).code;
  }
  return undefined;
}

describe('secondsOption', () => {
  const t = secondsOption('timeout');
  test.each([['300', 300], ['0.5', 0.5], ['.5', 0.5], [300, 300], [String(MAX_TIMEOUT_SECONDS), MAX_TIMEOUT_SECONDS]])('%s', (v, want) => {
    expect(t(v)).toBe(want);
  });
  test.each([['abc'], ['-5'], ['0'], ['1e99'], ['NaN'], ['Infinity'], [''], [true], [[5, 6]], [String(MAX_TIMEOUT_SECONDS + 1)], [-1], [Number.NaN]])('refuses %j', (v) => {
    expect(code(() => t(v))).toBe('ERR_PARAM');
  });
});

describe('intOption', () => {
  const n = intOption('max-sessions', 1, 4096);
  test.each([['1', 1], ['4096', 4096], [16, 16], ['+7', 7]])('%s', (v, want) => {
    expect(n(v)).toBe(want);
  });
  test.each([['0'], ['4097'], ['1.5'], ['x'], ['0x10'], [''], [1.5], [[1, 2]], [true]])('refuses %j', (v) => {
    expect(code(() => n(v))).toBe('ERR_PARAM');
  });
  test('negative ranges', () => {
    expect(intOption('sum-size', -1, 32)('-1')).toBe(-1);
    expect(code(() => intOption('sum-size', -1, 32)('-2'))).toBe('ERR_PARAM');
  });
});

describe('sizeOption', () => {
  test('sizes with units', () => {
    expect(sizeOption('block-size')('64K')).toBe(65536);
    expect(sizeOption('size', 1)('1M')).toBe(1 << 20);
  });
  test.each([['12Q'], [''], ['-1'], [[1, 2]]])('refuses %j', (v) => {
    expect(code(() => sizeOption('block-size')(v))).toBe('ERR_PARAM');
  });
  test('a minimum', () => {
    expect(code(() => sizeOption('size', 1)('0'))).toBe('ERR_PARAM');
  });
});
