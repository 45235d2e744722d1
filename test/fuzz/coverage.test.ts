/**
 * Coverage feedback (fuzz/coverage.ts): V8 block coverage read through
 * node:inspector tells which blocks of the project's code an input ran for
 * the first time, and a coverage-guided run is still reproducible by seed.
 * The last test runs the compiled CLI (dist/, built by `npm test`).
 */
import { describe, expect, test } from 'vitest';
import { BlockCoverage, isProjectScript } from '../../fuzz/coverage.js';
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { encodeFrame, FrameDecoder } from '../../src/bytes/frame.js';

/** The fuzz CLI, compiled (`npm run fuzz` runs the same file). */
const RUN = resolve('dist/fuzz/run.js');

const decode = (b: Uint8Array, max = 64): string => {
  try {
    return `${[...new FrameDecoder(max).push(b)].length} frames`;
  } catch (e) {
    return (e as { code?: string }).code ?? 'error';
  }
};

describe('BlockCoverage', () => {
  test('counts only code under test', () => {
    expect(isProjectScript(new URL('../../src/bytes/frame.ts', import.meta.url).href)).toBe(true);
    expect(isProjectScript(new URL('../../dist/protocol/codec.js', import.meta.url).href)).toBe(true);
    expect(isProjectScript(new URL('../../fuzz/engine.ts', import.meta.url).href)).toBe(false);
    expect(isProjectScript(new URL('../../node_modules/fast-check/lib/fast-check.js', import.meta.url).href)).toBe(false);
    expect(isProjectScript('node:internal/buffer')).toBe(false);
  });

  test('a new branch is a new feature; the same input again is not', () => {
    const cov = new BlockCoverage();
    cov.start();
    try {
      decode(encodeFrame(Buffer.from('warm-up')));
      cov.take(); // what ran before: not judged
      expect(decode(encodeFrame(Buffer.from('hello')))).toBe('1 frames');
      const first = cov.take();
      expect([...first].some((f) => f.includes('/src/bytes/frame.'))).toBe(true);
      cov.merge(first);
      expect(decode(encodeFrame(Buffer.from('world')))).toBe('1 frames');
      expect(cov.take().size).toBe(0);
      // An oversized frame takes the decoder's error branch: blocks that never ran before.
      expect(decode(encodeFrame(new Uint8Array(100)))).toBe('ERR_FRAME_TOO_LARGE');
      const over = cov.take();
      expect(over.size).toBeGreaterThan(0);
      cov.merge(over);
      const s = cov.summary();
      expect(s.blocksCovered).toBe(first.size + over.size);
      expect(s.blocksKnown).toBeGreaterThanOrEqual(s.blocksCovered);
    } finally {
      cov.stop();
    }
  });
});

// In a fresh process each time (as `npm run fuzz` runs a target in a fresh worker): within one
// process, code that runs once (module set-up, caches) is covered by the first run only.
test('a coverage-guided run adds inputs for new blocks and is the same for the same seed', async () => {
  const crashDir = await mkdtemp(join(tmpdir(), 'resync-fuzz-crashes-'));
  const run = () =>
    new Promise<string>((resolve, reject) =>
      execFile(process.execPath, [RUN, '--target', 'deltafile', '--runs', '800', '--seed', '42', '--crash-dir', crashDir], { timeout: 120_000 }, (err, stdout) =>
        err ? reject(err) : resolve(stdout.replace(/ in [\d.]+ s \(\d+\/s\)/, '')),
      ),
    );
  try {
    const a = await run();
    const m = /coverage (\d+) of (\d+) blocks .*; (\d+) corpus entries for new blocks/.exec(a);
    expect(m, a).not.toBeNull();
    expect(Number(m![1])).toBeGreaterThan(50);
    expect(Number(m![3])).toBeGreaterThan(0);
    expect(a).toContain('0 new crashes');
    expect(await run()).toBe(a);
  } finally {
    await rm(crashDir, { recursive: true, force: true });
  }
});
