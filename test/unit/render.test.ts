/**
 * The console output's pure parts: progress lines fitted to the terminal, the
 * recent-window rate, the cadence of plain lines off a terminal (a clock the
 * test drives), and the dense summary.
 */
import { describe, expect, test } from 'vitest';
import { fmtDuration, formatBar, formatPlain, formatSummary, LINE_EVERY_MS, ProgressView, RateMeter, type ProgressEnv } from '../../src/cli/render.js';

const MiB = 1024 * 1024;

/** A clock the test moves and a terminal that records what is written. */
function fakeEnv(columns: number | undefined = 80): ProgressEnv & { t: number; out: string[] } {
  const env = {
    t: 0,
    out: [] as string[],
    now: () => env.t,
    write: (s: string) => void env.out.push(s),
    columns: () => columns,
  };
  return env;
}

// eslint-disable-next-line no-control-regex
const strip = (s: string): string => s.replace(/\x1b\[[0-9]*[A-Za-z]/g, '').replace(/\r/g, '');

describe('fmtDuration', () => {
  test('m:ss, h:mm:ss, unknown', () => {
    expect(fmtDuration(0)).toBe('0:00');
    expect(fmtDuration(7.4)).toBe('0:07');
    expect(fmtDuration(65)).toBe('1:05');
    expect(fmtDuration(3723)).toBe('1:02:03');
    expect(fmtDuration(NaN)).toBe('--:--');
    expect(fmtDuration(Infinity)).toBe('--:--');
  });
});

describe('formatBar fits the terminal', () => {
  const f = { label: 'delta', done: 300 * MiB, total: 1024 * MiB, rate: 95 * MiB, extra: 'matched 280.0 MiB literal 20.0 MiB' };

  test('at any width from 20 to 300 columns the line fits', () => {
    for (let w = 20; w <= 300; w++) expect(formatBar(f, w).length, `width ${w}`).toBeLessThanOrEqual(w);
  });

  test('the rate and the ETA stay down to 40 columns; the bar grows with the width', () => {
    for (let w = 40; w <= 300; w++) {
      const line = formatBar(f, w);
      expect(line, `width ${w}`).toContain('95.0 MiB/s');
      expect(line, `width ${w}`).toMatch(/ETA +0:08/);
    }
    // 80 columns: bar, percent, counts, rate, ETA (the counters give way).
    const at80 = formatBar(f, 80);
    expect(at80).toMatch(/^delta {5}\[=+-+\] {2}29% {1,}300\.0 MiB\/1\.0 GiB {1,}95\.0 MiB\/s ETA {1,}0:08$/);
    expect(at80.length).toBe(80);
    // A wide terminal has room for the counters and a longer bar.
    const at160 = formatBar(f, 160);
    expect(at160).toContain('matched 280.0 MiB literal 20.0 MiB');
    expect(at160.length).toBe(160);
    expect(/\[([=-]+)\]/.exec(at160)![1]!.length).toBeGreaterThan(/\[([=-]+)\]/.exec(at80)![1]!.length);
  });

  test('the bar keeps its width while the figures change', () => {
    const bar = (done: number, rate: number): number => /\[([=-]+)\]/.exec(formatBar({ label: 'delta', done, total: 1024 * MiB, rate }, 100))![1]!.length;
    const widths = new Set([bar(0, NaN), bar(5 * 1024, 1 * MiB), bar(300 * MiB, 95 * MiB), bar(1000 * MiB, 1000 * MiB), bar(1024 * MiB, 1.5 * MiB)]);
    expect(widths.size).toBe(1);
  });

  test('unknown rate and finished work', () => {
    expect(formatBar({ label: 'patch', done: 0, total: 10, rate: NaN }, 80)).toMatch(/--\/s ETA --:--$/);
    expect(formatBar({ label: 'patch', done: 10, total: 10, rate: NaN }, 80)).toMatch(/100% .* ETA  0:00$/);
    expect(formatPlain({ label: 'patch', done: 0, total: 0, rate: 2048 })).toBe('patch 100% 0 B/0 B 2.0 KiB/s ETA 0:00');
  });
});

describe('RateMeter: the rate of the last seconds', () => {
  test('a steady rate is measured as it is', () => {
    const m = new RateMeter();
    for (let t = 0; t <= 10_000; t += 100) m.update(t * 100 * 1000, t); // 100 MB/s
    expect(m.rate).toBeCloseTo(100e6, -3);
  });

  test('after a slowdown the rate follows within seconds, where an average since the start would not', () => {
    const m = new RateMeter();
    let done = 0;
    let t = 0;
    for (; t < 20_000; t += 100) m.update((done += 10e6), t); // 100 MB/s for 20 s
    for (const end = t + 6_000; t < end; t += 100) m.update((done += 1e6), t); // then 10 MB/s for 6 s
    const sinceStart = done / (t / 1000);
    expect(sinceStart).toBeGreaterThan(75e6);
    expect(m.rate).toBeLessThan(25e6);
    expect(m.rate).toBeGreaterThan(10e6);
  });

  test('samples closer than the window are folded into the next one; no rate from a single sample', () => {
    const m = new RateMeter(3000, 250);
    m.update(0, 0);
    expect(m.rate).toBeNaN();
    m.update(1e6, 1); // 1 ms later: a burst that would read as 1 GB/s
    expect(m.rate).toBeNaN();
    m.update(1e6, 500);
    expect(m.rate).toBeCloseTo(2e6, -2);
  });
});

describe('ProgressView off a terminal: plain lines for logs', () => {
  test(`slow work: the phase's first line, then one every ${LINE_EVERY_MS / 1000} s, and the last state at the end`, () => {
    const env = fakeEnv(undefined);
    const v = new ProgressView('lines', 'signature', env);
    const total = 1000 * MiB;
    // 1 MiB/s with a report every 100 ms: 60 s reach 6 %, no tenth crossed.
    for (env.t = 0; env.t <= 60_000; env.t += 100) v.fn({ phase: 'signature', done: (env.t / 1000) * MiB, total });
    expect(env.out).toHaveLength(1 + 12);
    for (const l of env.out) expect(l).toMatch(/^resync signature: signature \d+% .* ETA [-\d:]+\n$/);
    expect(env.out[12]).toContain('1.0 MiB/s');
    expect(env.out[12]).toContain('ETA 15:40'); // 940 MiB at 1 MiB/s
    // The last report was printed (t = 60 s): stop adds nothing. A later one is printed at the end.
    v.stop();
    expect(env.out).toHaveLength(13);
    env.t += 100;
    v.fn({ phase: 'signature', done: 61 * MiB, total });
    expect(env.out).toHaveLength(13);
    v.stop();
    expect(env.out).toHaveLength(14);
    expect(env.out[13]).toContain('61.0 MiB/1000.0 MiB');
  });

  test('fast work: a line for each tenth, not for each report', () => {
    const env = fakeEnv(undefined);
    const v = new ProgressView('lines', 'delta', env);
    for (let i = 1; i <= 1000; i++) {
      env.t = i;
      v.fn({ phase: 'delta', done: i * MiB, total: 1000 * MiB, matched: i * MiB, literal: 0 });
    }
    v.stop();
    const pcts = env.out.map((l) => Number(/delta (\d+)%/.exec(l)![1]));
    expect(pcts).toEqual([0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100]);
  });

  test('a push has an overall part across its phases', () => {
    const env = fakeEnv(undefined);
    const v = new ProgressView('lines', 'push', env);
    v.fn({ phase: 'hash', done: 0, total: 100 * MiB });
    v.fn({ phase: 'hash', done: 100 * MiB, total: 100 * MiB });
    v.fn({ phase: 'delta', done: 50 * MiB, total: 100 * MiB });
    v.stop();
    expect(env.out[0]).toMatch(/^resync push: hash 0% .*; total 1\/2 0% 0 B\/200\.0 MiB /);
    expect(env.out.at(-1)).toMatch(/^resync push: delta 50% .*; total 2\/2 75% 150\.0 MiB\/200\.0 MiB /);
  });

  test('off: nothing at all', () => {
    const env = fakeEnv();
    const v = new ProgressView('off', 'push', env);
    v.fn({ phase: 'delta', done: 1, total: 2 });
    v.stop();
    expect(env.out).toEqual([]);
  });
});

describe('ProgressView on a terminal', () => {
  test('two lines fitted to the width, redrawn at most five times a second, left on screen at the end', () => {
    const env = fakeEnv(100);
    const v = new ProgressView('tty', 'push', env);
    for (env.t = 0; env.t < 2000; env.t += 10) v.fn({ phase: 'delta', done: env.t * 1000, total: 4_000_000, matched: env.t * 900, literal: env.t * 100 });
    // 2 s of reports every 10 ms: the first draw and then one per 200 ms.
    expect(env.out.length).toBe(10);
    for (const w of env.out) {
      const lines = strip(w).split('\n');
      expect(lines).toHaveLength(2);
      for (const l of lines) expect(l.length).toBeLessThanOrEqual(99);
      expect(lines[0]).toMatch(/^delta/);
      expect(lines[1]).toMatch(/^total 1\/2/);
    }
    // Each redraw after the first goes back up to the first line.
    expect(env.out[1]!.startsWith('\x1b[1A')).toBe(true);
    v.stop();
    expect(env.out.at(-1)).toBe('\n');
  });

  test('a narrow terminal keeps the rate and ETA', () => {
    const env = fakeEnv(50);
    const v = new ProgressView('tty', 'delta', env);
    env.t = 0;
    v.fn({ phase: 'delta', done: 0, total: 100 * MiB });
    env.t = 1000;
    v.fn({ phase: 'delta', done: 10 * MiB, total: 100 * MiB });
    const last = strip(env.out.at(-1)!);
    expect(last.length).toBeLessThanOrEqual(49);
    expect(last).toContain('10.0 MiB/s');
    expect(last).toMatch(/ETA +0:09/);
  });
});

describe('formatSummary', () => {
  test('a push in two lines, the details on the second', () => {
    const s = formatSummary('push', {
      imageSize: 1024 * MiB,
      blockSize: 32768,
      matchedBytes: 1000 * MiB,
      literalBytes: 24 * MiB,
      copyOps: 120,
      literalOps: 37,
      bytesSent: 25 * MiB,
      bytesReceived: 17 * 1024,
      verified: true,
      resumedFrom: 0,
      elapsedMs: 2345.6,
    });
    expect(s).toBe(
      'push: done: 1.0 GiB in 2.35 s (436.6 MiB/s); matched 1000.0 MiB, literal 24.0 MiB; sent 25.0 MiB, received 17.0 KiB; verified\n' +
        '  120 copies, 37 literals; block 32.0 KiB',
    );
  });

  test('one line when there are no details; keys it does not know are kept', () => {
    expect(formatSummary('signature', { imageSize: 8 * MiB, blockSize: 0, signatureBytes: 548, elapsedMs: 120 })).toBe('signature: done: 8.0 MiB in 0.12 s (66.7 MiB/s); signature 548 B');
    expect(formatSummary('recover', { image: 'a.img', outcome: 'rolled-back' })).toBe('recover: done\n  image: a.img; outcome: rolled-back');
    // Nothing to settle is not a failure to verify.
    expect(formatSummary('recover', { image: 'a.img', outcome: 'nothing', verified: false })).toBe('recover: done: nothing to do\n  image: a.img; outcome: nothing');
    expect(formatSummary('recover', { image: 'a.img', outcome: 'rolled-back', verified: false })).toContain('recover: done: not verified');
    expect(formatSummary('verify', { identical: false, sizeA: 2 * MiB, differingBytes: 4096, rangeCount: 1, elapsedMs: 1500 })).toBe(
      'verify: done: 1.50 s\n  identical: false; sizeA: 2.0 MiB; differingBytes: 4.0 KiB; rangeCount: 1',
    );
  });

  test('a push to several replicas: the image and the shared read, then one line per replica, failures with their code and hint', () => {
    const s = formatSummary('push', {
      imageSize: 64 * MiB,
      sharedReadBytes: 64 * MiB,
      elapsedMs: 2000,
      replicas: [
        { remote: 'dr1:7873/vm1', ok: true, imageSize: 64 * MiB, blockSize: 8192, matchedBytes: 63 * MiB, literalBytes: MiB, copyOps: 3, literalOps: 2, bytesSent: MiB, bytesReceived: 2048, verified: true, resumedFrom: 0, elapsedMs: 1000, bytesWritten: MiB, sharedRead: true },
        { remote: 'dr2:7873/vm1', ok: true, imageSize: 64 * MiB, blockSize: 16384, matchedBytes: 64 * MiB, literalBytes: 0, copyOps: 1, literalOps: 0, bytesSent: 300, bytesReceived: 900, verified: true, elapsedMs: 500, bytesWritten: 0, sharedRead: false },
        { remote: 'dr3:7873/vm1', ok: false, code: 'ERR_AUTH', message: 'server: authentication failed', exitCode: 8, hint: 'check the secret', elapsedMs: 30 },
      ],
    });
    expect(s.split('\n')).toEqual([
      'push: done: 64.0 MiB to 3 replicas in 2.00 s (32.0 MiB/s); read once 64.0 MiB',
      '  dr1:7873/vm1: 64.0 MiB in 1.00 s (64.0 MiB/s); matched 63.0 MiB, literal 1.0 MiB; sent 1.0 MiB, received 2.0 KiB; wrote 1.0 MiB; verified; 3 copies, 2 literals; block 8.0 KiB',
      '  dr2:7873/vm1: 64.0 MiB in 0.50 s (128.0 MiB/s); matched 64.0 MiB, literal 0 B; sent 300 B, received 900 B; wrote 0 B; verified; 1 copy, 0 literals; block 16.0 KiB; read on its own',
      '  dr3:7873/vm1: failed: error ERR_AUTH: server: authentication failed (hint: check the secret)',
    ]);
  });

  test('a --dirty-bitmap push: bytes read in units, and a check of the dirty blocks only said where "verified" stands', () => {
    const base = { imageSize: 64 * MiB, dirtyBytes: 192 * 1024, bytesRead: 196608, verified: true, elapsedMs: 100 };
    const dirty = formatSummary('push', { ...base, verifiedScope: 'dirty' });
    expect(dirty).toContain('read 192.0 KiB; verified: the dirty blocks only, not the whole image');
    expect(dirty).not.toContain('verifiedScope');
    expect(formatSummary('push', { ...base, verifiedScope: 'image' })).toMatch(/read 192\.0 KiB; verified(\n|$)/);
  });

  test('one copy, one literal', () => {
    expect(formatSummary('delta', { copyOps: 1, literalOps: 1 })).toBe('delta: done\n  1 copy, 1 literal');
  });

  test('a note comes last', () => {
    const s = formatSummary('patch', { imageSize: 10, bytesWritten: 0, resumedFrom: 10, nothingToResume: true, note: 'nothing to resume: x', verified: true, elapsedMs: 5 });
    expect(s.split('\n')).toHaveLength(2);
    expect(s).toMatch(/nothingToResume: true; nothing to resume: x$/);
  });
});

describe('fmtBytes', () => {
  test('whole bytes; up a unit where the rounding reaches 1024', async () => {
    const { fmtBytes } = await import('../../src/cli/render.js');
    expect(fmtBytes(0)).toBe('0 B');
    expect(fmtBytes(1023)).toBe('1023 B');
    expect(fmtBytes(512.3456)).toBe('512 B');
    expect(fmtBytes(1024)).toBe('1.0 KiB');
    expect(fmtBytes(1048575.9)).toBe('1.0 MiB');
    expect(fmtBytes(1536 * 1024)).toBe('1.5 MiB');
  });
});
