/** The progress of a push to several replicas as one line: the shared hash pass once, the deltas summed. */
import { describe, expect, test } from 'vitest';
import { combinedProgress } from '../../src/net/fanout.js';
import type { Progress } from '../../src/core/progress.js';

describe('combinedProgress', () => {
  test('hash: the furthest replica out of one image; delta: the sum out of one image per replica', () => {
    const seen: Progress[] = [];
    const of = combinedProgress((p) => seen.push(p), 3);
    of(0)!({ phase: 'hash', done: 40, total: 100 });
    of(1)!({ phase: 'hash', done: 60, total: 100 });
    of(0)!({ phase: 'hash', done: 50, total: 100 });
    expect(seen.map((p) => [p.done, p.total])).toEqual([
      [40, 100],
      [60, 100],
      [60, 100],
    ]);
    seen.length = 0;
    of(0)!({ phase: 'delta', done: 10, total: 100, matched: 8, literal: 2 });
    of(2)!({ phase: 'delta', done: 30, total: 100, matched: 20, literal: 10 });
    expect(seen.at(-1)).toEqual({ phase: 'delta', done: 40, total: 300, matched: 28, literal: 12 });
  });

  test('no callback, no work', () => {
    expect(combinedProgress(undefined, 2)(0)).toBeUndefined();
  });
});
