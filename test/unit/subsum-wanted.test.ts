/**
 * Which changed blocks a sender asks the receiver's sub-block sums for
 * (subSumWanted): the ends of every changed run next to a block in place,
 * and every block of a short run anchored so, whatever order it is asked in.
 */
import { describe, expect, test } from 'vitest';
import { fc, test as fcTest } from '@fast-check/vitest';
import { subSumWanted } from '../../src/core/subsum.js';

/** 'c' changed, 's' the same where it stands, 'x' neither (a short last block, or past the end). */
function wanted(map: string, maxRun: number): (i: number) => boolean {
  const at = (i: number): string => (i >= 0 && i < map.length ? map[i]! : 'x');
  return subSumWanted((i) => at(i) === 'c', (i) => at(i) === 's', maxRun);
}

function asked(map: string, maxRun: number, order: number[] = [...map].map((_, i) => i)): string {
  const w = wanted(map, maxRun);
  const out = [...map].map(() => '.');
  for (const i of order) out[i] = w(i) ? 'A' : '.';
  return out.join('');
}

/** The rule, block by block, with no state: the oracle. */
function oracle(map: string, maxRun: number): string {
  const at = (i: number): string => (i >= 0 && i < map.length ? map[i]! : 'x');
  return [...map]
    .map((c, i) => {
      if (c !== 'c') return '.';
      if (at(i - 1) === 's' || at(i + 1) === 's') return 'A';
      let s = i;
      while (at(s - 1) === 'c') s--;
      let e = i;
      while (at(e + 1) === 'c') e++;
      return e - s + 1 <= maxRun && (at(s - 1) === 's' || at(e + 1) === 's') ? 'A' : '.';
    })
    .join('');
}

describe('subSumWanted', () => {
  test('a short changed run between blocks in place is asked for whole', () => {
    expect(asked('ssccccss', 4)).toBe('..AAAA..');
  });

  test('a longer run only at its ends', () => {
    expect(asked('ssccccccss', 4)).toBe('..A....A..');
  });

  test('one block in place at either end is enough', () => {
    expect(asked('sccc', 3)).toBe('.AAA');
    expect(asked('cccs', 3)).toBe('AAA.');
    expect(asked('xcccs', 3)).toBe('.AAA.');
  });

  test('a run with no block in place beside it is not asked for', () => {
    expect(asked('cccc', 8)).toBe('....');
    expect(asked('xccx', 8)).toBe('....');
  });

  test('blocks in place and short blocks never are', () => {
    expect(asked('ssxss', 8)).toBe('.....');
  });

  test('asked backwards, the answers are the same', () => {
    const map = 'sscccsccccccscsccx';
    const back = [...map].map((_, i) => map.length - 1 - i);
    expect(asked(map, 3, back)).toBe(asked(map, 3));
    expect(asked(map, 3)).toBe(oracle(map, 3));
  });

  test('a long run is measured only as far as it takes to know it is long', () => {
    // A shifted image: everything after an insertion is one changed run.
    const n = 100_000;
    let calls = 0;
    const w = subSumWanted(
      (i) => {
        calls++;
        return i >= 2 && i < n;
      },
      (i) => i === 0 || i === 1,
      4,
    );
    expect(w(2)).toBe(true);
    expect(w(3)).toBe(false);
    expect(calls).toBeLessThan(20);
    for (let i = 4; i < n; i++) expect(w(i)).toBe(false);
    // Each later block costs a bounded number of calls, not a walk to the run's end.
    expect(calls).toBeLessThan(4 * n);
  });

  fcTest.prop([fc.array(fc.constantFrom('c', 's', 'x'), { minLength: 1, maxLength: 60 }), fc.integer({ min: 1, max: 8 }), fc.boolean()], { numRuns: 300 })(
    'agrees with the rule block by block, in any order',
    (cells, maxRun, shuffle) => {
      const map = cells.join('');
      const order = [...map].map((_, i) => i);
      if (shuffle) order.sort((a, b) => ((a * 7919) % 61) - ((b * 7919) % 61));
      expect(asked(map, maxRun, order)).toBe(oracle(map, maxRun));
    },
  );
});
