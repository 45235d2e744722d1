/**
 * The CLI as installed (bin/resync.js, which runs the bundle dist/resync.cjs from its code cache) end to end: JSON summaries of
 * signature/delta/patch, help, and the exit status and stderr line for each
 * kind of failure. `npm test` builds dist first; run `npm run build`
 * before running this file alone.
 */
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, readFile, readdir, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { hashImage } from '../../src/api/files.js';
import { generateImage, makePair } from '../../src/testing/workload.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const CLI = join(ROOT, 'bin/resync.js');
const MALFORMED = join(ROOT, 'fixtures/malformed');

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Run the CLI with `args`; never rejects. */
function cli(...args: string[]): Promise<Run> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { maxBuffer: 16 * 1024 * 1024, timeout: 60_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

/** The single JSON object a --json run prints on stdout. */
function json(r: Run): Record<string, unknown> {
  const lines = r.stdout.trim().split('\n');
  expect(lines, `stdout: ${r.stdout}`).toHaveLength(1);
  return JSON.parse(lines[0]!) as Record<string, unknown>;
}

/** stderr must be exactly one non-empty line. */
function oneLine(stderr: string): string {
  const lines = stderr.split('\n').filter((l) => l.length > 0);
  expect(lines, `stderr: ${stderr}`).toHaveLength(1);
  return lines[0]!;
}

let d: string;
let basis: string;
let target: string;
const PREVIOUS = Buffer.from('previous output\n');

beforeAll(async () => {
  expect(existsSync(CLI), `${CLI} is missing: build with npx tsc -p tsconfig.json first`).toBe(true);
  d = await mkdtemp(join(tmpdir(), 'resync-cli-'));
  const pair = await makePair(d, 'mixed', 2 * 1024 * 1024 + 333, 5);
  basis = pair.basis;
  target = pair.target;
});

afterAll(async () => {
  await rm(d, { recursive: true, force: true });
});

describe('signature, delta, patch with --json', () => {
  let sigOut: Record<string, unknown>;
  let deltaOut: Record<string, unknown>;
  let patchOut: Record<string, unknown>;
  let runs: Run[];

  beforeAll(async () => {
    const s = await cli('signature', '--json', basis, join(d, 'b.sig'));
    const dl = await cli('delta', '--json', join(d, 'b.sig'), target, join(d, 't.delta'));
    const p = await cli('patch', '--json', basis, join(d, 't.delta'), join(d, 'out.img'));
    runs = [s, dl, p];
    for (const r of runs) expect(r.code, r.stderr).toBe(0);
    [sigOut, deltaOut, patchOut] = runs.map(json) as [Record<string, unknown>, Record<string, unknown>, Record<string, unknown>];
  });

  test('nothing but the JSON line is printed (no progress bar off a terminal)', () => {
    for (const r of runs) expect(r.stderr).toBe('');
  });

  test('signature summary', async () => {
    const size = (await stat(basis)).size;
    expect(sigOut).toEqual({
      schema: 1,
      command: 'signature',
      ok: true,
      imageSize: size,
      blockSize: 2048,
      signatureBytes: (await stat(join(d, 'b.sig'))).size,
      elapsedMs: expect.any(Number),
    });
    // About (4 + 16) bytes per block.
    expect(sigOut.signatureBytes as number).toBeGreaterThan(Math.ceil(size / 2048) * 20);
  });

  test('delta summary', async () => {
    const size = (await stat(target)).size;
    expect(deltaOut).toMatchObject({
      command: 'delta',
      ok: true,
      imageSize: size,
      blockSize: 2048,
      deltaBytes: (await stat(join(d, 't.delta'))).size,
    });
    for (const k of ['matchedBytes', 'literalBytes', 'copyOps', 'literalOps', 'elapsedMs']) expect(typeof deltaOut[k], k).toBe('number');
    expect((deltaOut.matchedBytes as number) + (deltaOut.literalBytes as number)).toBe(size);
    expect(deltaOut.matchedBytes as number).toBeGreaterThan(size / 2);
    expect(deltaOut.copyOps as number).toBeGreaterThan(0);
    expect(deltaOut.literalOps as number).toBeGreaterThan(0);
  });

  test('patch summary, and the output is the target', async () => {
    const size = (await stat(target)).size;
    expect(patchOut).toMatchObject({
      command: 'patch',
      ok: true,
      imageSize: size,
      matchedBytes: deltaOut.matchedBytes,
      literalBytes: deltaOut.literalBytes,
      copyOps: deltaOut.copyOps,
      literalOps: deltaOut.literalOps,
      verified: true,
    });
    expect(typeof patchOut.elapsedMs).toBe('number');
    expect((await hashImage(join(d, 'out.img'))).equals(await hashImage(target))).toBe(true);
  });

  test.concurrent('--block-size, --hash and --strong-len reach the signature', async () => {
    const r = await cli('signature', '--json', '-b', '3000', '--hash', 'blake2b', '--strong-len', '32', basis, join(d, 'b3000.sig'));
    expect(r.code, r.stderr).toBe(0);
    const size = (await stat(basis)).size;
    const out = json(r);
    expect(out).toMatchObject({ imageSize: size, blockSize: 3000 });
    expect(out.signatureBytes as number).toBeGreaterThan(Math.ceil(size / 3000) * 36);
    const dl = await cli('delta', '--json', join(d, 'b3000.sig'), target, join(d, 't3000.delta'));
    expect(json(dl)).toMatchObject({ blockSize: 3000 });
    const p = await cli('patch', '--json', basis, join(d, 't3000.delta'), join(d, 'out3000.img'));
    expect(json(p)).toMatchObject({ verified: true });
    expect((await hashImage(join(d, 'out3000.img'))).equals(await hashImage(target))).toBe(true);
  });

  test.concurrent('sizes like 4K are accepted for --block-size', async () => {
    const r = await cli('signature', '--json', '--block-size', '4K', basis, join(d, 'b4k.sig'));
    expect(json(r)).toMatchObject({ blockSize: 4096 });
  });

  // The summary is the command's result: stdout, so `resync ... > out` keeps it (issue 14.10).
  test.concurrent('without --json: a human summary on stdout, nothing on stderr', async () => {
    const r = await cli('signature', basis, join(d, 'human.sig'));
    expect(r.code).toBe(0);
    expect(r.stderr).toBe('');
    // One or two dense lines (the details in --json), not a line per field.
    const lines = r.stdout.trimEnd().split('\n');
    expect(lines.length, r.stdout).toBeLessThanOrEqual(2);
    expect(lines[0]).toMatch(/^signature: done: 2\.0 MiB in [\d.]+ s .*; signature [\d.]+ KiB$/);
    expect(r.stdout).toContain('block 2.0 KiB');
  });

  test.concurrent('--progress off a terminal: plain progress lines on stderr, for logs', async () => {
    const r = await cli('signature', '--progress', basis, join(d, 'progress.sig'));
    expect(r.code).toBe(0);
    const lines = r.stderr.trimEnd().split('\n');
    const progress = lines.filter((l) => l.startsWith('resync signature: signature '));
    expect(progress.length, r.stderr).toBeGreaterThanOrEqual(1);
    expect(progress.at(-1)).toMatch(/ 100% 2\.0 MiB\/2\.0 MiB .*\/s ETA 0:00$/);
    expect(r.stderr).not.toContain('\x1b');
  });

  test('--json: a schema version and whole milliseconds in every object, success or failure', async () => {
    for (const o of [sigOut, deltaOut, patchOut]) {
      expect(o.schema).toBe(1);
      expect(Number.isInteger(o.elapsedMs)).toBe(true);
    }
    const bad = await cli('patch', '--json', basis, join(d, 'no-such.delta'), join(d, 'x.img'));
    expect(bad.code).toBe(5);
    expect(json(bad)).toMatchObject({ schema: 1, command: 'patch', ok: false, code: 'ERR_IO' });
  });

  test.concurrent('--quiet prints nothing at all', async () => {
    const r = await cli('signature', '--quiet', basis, join(d, 'quiet.sig'));
    expect(r).toEqual({ code: 0, stdout: '', stderr: '' });
  });
});

describe('--help', () => {
  test.concurrent.each(['signature', 'delta', 'patch'])('%s --help exits 0 and describes the command', async (cmd) => {
    const r = await cli(cmd, '--help');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`resync ${cmd}`);
    expect(r.stdout).toContain('--json');
  });

  test('top-level --help lists the three file commands', async () => {
    const r = await cli('--help');
    expect(r.code).toBe(0);
    for (const c of ['signature', 'delta', 'patch']) expect(r.stdout).toContain(`resync ${c}`);
  });
});

describe.concurrent('a missing input file exits 5 with one stderr line naming it', () => {
  test('signature: missing basis', async () => {
    const missing = join(d, 'no-such-basis.img');
    const r = await cli('signature', missing, join(d, 'x.sig'));
    expect(r.code).toBe(5);
    expect(oneLine(r.stderr)).toContain(missing);
    expect(existsSync(join(d, 'x.sig'))).toBe(false);
  });

  test('delta: missing signature, and missing new file', async () => {
    const missingSig = join(d, 'no-such.sig');
    const r1 = await cli('delta', missingSig, target, join(d, 'x.delta'));
    expect(r1.code).toBe(5);
    expect(oneLine(r1.stderr)).toContain(missingSig);
    const missingNew = join(d, 'no-such-new.img');
    const r2 = await cli('delta', join(d, 'b.sig'), missingNew, join(d, 'x.delta'));
    expect(r2.code).toBe(5);
    expect(oneLine(r2.stderr)).toContain(missingNew);
    expect(existsSync(join(d, 'x.delta'))).toBe(false);
  });

  test('patch: missing basis, and missing delta', async () => {
    const missingBasis = join(d, 'no-such-basis2.img');
    const r1 = await cli('patch', missingBasis, join(d, 't.delta'), join(d, 'x.img'));
    expect(r1.code).toBe(5);
    expect(oneLine(r1.stderr)).toContain(missingBasis);
    const missingDelta = join(d, 'no-such.delta');
    const r2 = await cli('patch', basis, missingDelta, join(d, 'x.img'));
    expect(r2.code).toBe(5);
    expect(oneLine(r2.stderr)).toContain(missingDelta);
    expect(existsSync(join(d, 'x.img'))).toBe(false);
  });

  test('with --json the error is also a JSON object on stdout', async () => {
    const missing = join(d, 'no-such-basis3.img');
    const r = await cli('signature', '--json', missing, join(d, 'x.sig'));
    expect(r.code).toBe(5);
    expect(json(r)).toMatchObject({ command: 'signature', ok: false, code: 'ERR_IO' });
    expect(oneLine(r.stderr)).toContain(missing);
  });
});

describe('corrupt input exits 3', () => {
  const table = JSON.parse(readFileSync(join(MALFORMED, 'cases.json'), 'utf8')) as {
    basis: string;
    cases: { file: string; kind: string; stage: string; code: string }[];
  };
  const mbasis = join(MALFORMED, table.basis);

  // One malformed delta per code the CLI treats as bad input (the whole table
  // is exercised through the API in test/unit/malformed-files.test.ts).
  const BAD_INPUT = ['ERR_BAD_MAGIC', 'ERR_VERSION', 'ERR_CORRUPT', 'ERR_UNEXPECTED_EOF', 'ERR_TRAILING_DATA', 'ERR_LIMIT', 'ERR_COPY_OUT_OF_BOUNDS'];
  const deltas = BAD_INPUT.map((code) => table.cases.find((c) => c.kind === 'delta' && c.code === code)!);
  const more = ['delta-digest-mismatch.bin', 'delta-truncated-op.bin', 'delta-op-count-high.bin'];

  test.concurrent.each([...deltas.map((c) => [c.file, c.code]), ...more.map((f) => [f, table.cases.find((c) => c.file === f)!.code])])(
    'patch with %s (%s) exits 3 and leaves the output as it was',
    async (file, code) => {
    // A unique name: delta-digest-mismatch.bin is in both lists, and the two runs are concurrent.
    const out = join(d, `corrupt-${file}-${Math.random().toString(36).slice(2)}.img`);
    await writeFile(out, PREVIOUS);
    // --force: an existing output is replaced only when asked, and even then not by a failed patch.
    const r = await cli('patch', '--json', '--force', mbasis, join(MALFORMED, file), out);
    expect(r.code, r.stderr).toBe(3);
    expect(json(r)).toMatchObject({ ok: false, code });
    expect(oneLine(r.stderr)).toContain(code);
    expect(await readFile(out)).toEqual(PREVIOUS);
    },
  );

  test('a corrupt signature given to delta exits 3', async () => {
    const r = await cli('delta', join(MALFORMED, 'sig-digest-mismatch.bin'), target, join(d, 'y.delta'));
    expect(r.code).toBe(3);
    expect(oneLine(r.stderr)).toContain('ERR_CORRUPT');
    expect(existsSync(join(d, 'y.delta'))).toBe(false);
  });

  test('a delta given where a signature is expected exits 3 (bad magic)', async () => {
    const r = await cli('delta', join(d, 't.delta'), target, join(d, 'y.delta'));
    expect(r.code).toBe(3);
    expect(oneLine(r.stderr)).toContain('ERR_BAD_MAGIC');
  });

  // Regression: ERR_FRAME_TOO_LARGE and ERR_UNEXPECTED_MESSAGE once mapped to
  // 7 (network) even when they came from a signature or delta *file*.
  test.concurrent('a delta file with an oversized frame exits 3', async () => {
    const r = await cli('patch', mbasis, join(MALFORMED, 'delta-frame-too-large.bin'), join(d, 'z1.img'));
    expect(r.code).toBe(3);
    expect(oneLine(r.stderr)).toContain('ERR_FRAME_TOO_LARGE');
  });

  test.concurrent('a delta file with a message out of place exits 3', async () => {
    const r = await cli('patch', mbasis, join(MALFORMED, 'delta-unexpected-message.bin'), join(d, 'z2.img'));
    expect(r.code).toBe(3);
    expect(oneLine(r.stderr)).toContain('ERR_UNEXPECTED_MESSAGE');
  });

  test.concurrent('a signature file with an oversized frame given to delta exits 3', async () => {
    const r = await cli('delta', join(MALFORMED, 'sig-frame-too-large.bin'), target, join(d, 'z3.delta'));
    expect(r.code).toBe(3);
    expect(oneLine(r.stderr)).toContain('ERR_FRAME_TOO_LARGE');
  });
});

describe.concurrent('verification failures exit 4', () => {
  test('a delta applied to another image of the same size', async () => {
    const other = join(d, 'other.img');
    await writeFile(other, generateImage((await stat(basis)).size, 99));
    const before = await hashImage(other);
    const r = await cli('patch', other, join(d, 't.delta'), join(d, 'never.img'));
    expect(r.code).toBe(4);
    expect(oneLine(r.stderr)).toMatch(/ERR_BASIS_MISMATCH|ERR_VERIFY_FAILED/);
    expect((await hashImage(other)).equals(before)).toBe(true);
    expect(existsSync(join(d, 'never.img'))).toBe(false);
  });

  test('a basis of the wrong size', async () => {
    const small = join(d, 'small.img');
    await copyFile(basis, small);
    await writeFile(small, (await readFile(small)).subarray(0, 1000));
    const r = await cli('patch', small, join(d, 't.delta'), join(d, 'never.img'));
    expect(r.code).toBe(4);
    expect(oneLine(r.stderr)).toContain('ERR_BASIS_MISMATCH');
  });
});

describe('bad command lines exit 2', () => {
  test.concurrent.each([
    ['an unknown flag', ['signature', 'a.img', 'b.sig', '--bogus']],
    ['an unknown flag with a value', ['delta', '--no-such-flag=1', 'a.sig', 'b.img', 'c.delta']],
    ['an unreadable block size', ['signature', '-b', 'abc', 'a.img', 'b.sig']],
    ['a block size below the minimum', ['signature', '-b', '8', 'BASIS', 'b.sig']],
    ['a strong length out of range', ['signature', '--strong-len', '99', 'BASIS', 'b.sig']],
    ['an unknown hash', ['signature', '--hash', 'md5', 'a.img', 'b.sig']],
    ['a missing positional', ['delta', 'a.sig', 'b.img']],
    ['an unknown command', ['frobnicate']],
    ['no command', []],
  ])('%s', async (_what, args) => {
    const r = await cli(...args.map((a) => (a === 'BASIS' ? basis : a)));
    expect(r.code, r.stderr).toBe(2);
    expect(r.stderr.trim().length).toBeGreaterThan(0);
    expect(r.stdout).toBe('');
  });

  test('no stray files are left in the work directory by the failures', async () => {
    expect((await readdir(d)).filter((n) => n.endsWith('.tmp'))).toEqual([]);
  });
});

describe('start-up: the bundle and its code cache', () => {
  /** Run a bin/resync.js with RESYNC_TRACE set; returns the code-cache trace word. */
  function traced(bin: string): Promise<{ code: number; cache: string | undefined }> {
    return new Promise((resolve) => {
      execFile(process.execPath, [bin, '--version'], { env: { ...process.env, RESYNC_TRACE: '1' }, timeout: 60_000 }, (err, _stdout, stderr) => {
        resolve({ code: err ? -1 : 0, cache: /code cache (\w+)/.exec(stderr)?.[1] });
      });
    });
  }

  test('the bundle is ASCII: V8 keeps its source for the whole run, and one character past ASCII makes all of it two bytes a character', async () => {
    const bytes = await readFile(join(ROOT, 'dist/resync.cjs'));
    expect(bytes.findIndex((b) => b > 0x7f)).toBe(-1);
  });

  test('the command caps glibc\'s malloc arenas before the bundle loads, unless RESYNC_NO_NATIVE=1', async () => {
    const arenas = (env: NodeJS.ProcessEnv): Promise<string | undefined> =>
      new Promise((resolve) => {
        execFile(process.execPath, [CLI, '--version'], { env: { ...process.env, ...env, RESYNC_TRACE: '1' }, timeout: 60_000 }, (_err, _stdout, stderr) => resolve(/malloc arenas (\w+)/.exec(stderr)?.[1]));
      });
    if (process.platform === 'linux' && existsSync(join(ROOT, 'build/extents.node'))) expect(await arenas({})).toBe('2');
    expect(await arenas({ RESYNC_NO_NATIVE: '1' })).toBe('default');
  });

  test('the built CLI compiles from its code cache', async () => {
    expect(existsSync(join(ROOT, 'dist/resync.cjs.cache'))).toBe(true);
    expect(await traced(CLI)).toEqual({ code: 0, cache: 'used' });
  });

  test('run as the resync command (node options from its #! line) and as node bin/resync.js, each start uses a cache: neither rewrites the other\'s', async () => {
    const asCommand = (): Promise<string | undefined> =>
      new Promise((resolve) => {
        // Executed, so the kernel runs the #! line (env -S node --max-semi-space-size=...).
        execFile(CLI, ['--version'], { env: { ...process.env, RESYNC_TRACE: '1' }, timeout: 60_000 }, (_err, _stdout, stderr) => resolve(/code cache (\w+)/.exec(stderr)?.[1]));
      });
    for (let i = 0; i < 2; i++) {
      expect(await asCommand()).toBe('used');
      expect(await traced(CLI)).toEqual({ code: 0, cache: 'used' });
    }
  });

  test('the cache is keyed by the bundle\'s content: it survives new file times, not an edit; a run without a usable one writes it', async () => {
    const root = await mkdtemp(join(tmpdir(), 'resync-bin-'));
    try {
      await mkdir(join(root, 'bin'));
      await mkdir(join(root, 'dist'));
      for (const f of ['bin/resync.js', 'bin/package.json', 'dist/resync.cjs', 'dist/resync.cjs.cache']) await copyFile(join(ROOT, f), join(root, f));
      const bin = join(root, 'bin/resync.js');
      const bundle = join(root, 'dist/resync.cjs');
      // npm sets every file's mtime to 1985-10-26 at install; a copy gets a new one. Neither matters.
      const epoch = new Date('1985-10-26T08:15:00Z');
      await utimes(bundle, epoch, epoch);
      expect(await traced(bin)).toEqual({ code: 0, cache: 'used' });
      // A comment changed, the length kept: V8 alone would take the cache.
      const text = await readFile(bundle, 'utf8');
      await writeFile(bundle, text.replace('// dist/src/', '// DIST/src/'));
      expect((await readFile(bundle, 'utf8')).length).toBe(text.length);
      expect(await traced(bin)).toEqual({ code: 0, cache: 'stale' });
      expect(await traced(bin)).toEqual({ code: 0, cache: 'used' });
      await rm(join(root, 'dist/resync.cjs.cache'));
      expect(await traced(bin)).toEqual({ code: 0, cache: 'none' });
      expect(await traced(bin)).toEqual({ code: 0, cache: 'used' });
      expect((await readdir(join(root, 'dist'))).sort()).toEqual(['resync.cjs', 'resync.cjs.cache']);
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });

  /** A copy of the built CLI (bin and bundle, with its cache) in a temporary directory. */
  async function copyOfCli(): Promise<{ root: string; bin: string; bundle: string }> {
    const root = await mkdtemp(join(tmpdir(), 'resync-bin-'));
    await mkdir(join(root, 'bin'));
    await mkdir(join(root, 'dist'));
    for (const f of ['bin/resync.js', 'bin/package.json', 'dist/resync.cjs', 'dist/resync.cjs.cache']) await copyFile(join(ROOT, f), join(root, f));
    return { root, bin: join(root, 'bin/resync.js'), bundle: join(root, 'dist/resync.cjs') };
  }

  /** Run a bin/resync.js --version with RESYNC_TRACE set; returns how the code cache was taken ('used (by stamp)', 'stale', ...). */
  function how(bin: string, env: Record<string, string> = {}): Promise<string | undefined> {
    return new Promise((resolve) => {
      execFile(process.execPath, [bin, '--version'], { env: { ...process.env, RESYNC_TRACE: '1', ...env }, timeout: 60_000 }, (_err, _stdout, stderr) => resolve(/code cache (\w+(?: \(by \w+\))?)/.exec(stderr)?.[1]));
    });
  }

  // File times can be as coarse as a clock tick: the CLI trusts a stamp only a second after the bundle's last change,
  // or what RESYNC_CODE_CACHE_SETTLE_MS says (so that these tests do not hang on the clock, or race it on a busy machine).
  const SETTLED = { RESYNC_CODE_CACHE_SETTLE_MS: '0' };
  const RECENT = { RESYNC_CODE_CACHE_SETTLE_MS: '3600000' };

  test('a settled bundle is known by its stamp, without hashing it; a touch, a rewrite or an edit sends the next start back to its content', async () => {
    const { root, bin, bundle } = await copyOfCli();
    try {
      // The copied cache carries the stamp of another file: the content decides, and the stamp is brought up to date.
      expect(await how(bin, SETTLED)).toBe('used (by content)');
      expect(await how(bin, SETTLED)).toBe('used (by stamp)');
      const epoch = new Date('1985-10-26T08:15:00Z');
      await utimes(bundle, epoch, epoch);
      expect(await how(bin, SETTLED)).toBe('used (by content)');
      expect(await how(bin, SETTLED)).toBe('used (by stamp)');
      // The same bytes written again: a new ctime, the same content.
      await writeFile(bundle, await readFile(bundle));
      expect(await how(bin, SETTLED)).toBe('used (by content)');
      expect(await how(bin, SETTLED)).toBe('used (by stamp)');
      // An edit of the same length: V8 alone would take the cache.
      const text = await readFile(bundle, 'utf8');
      await writeFile(bundle, text.replace('// dist/src/', '// DIST/src/'));
      expect(await how(bin, SETTLED)).toBe('stale');
      expect(await how(bin, SETTLED)).toBe('used (by stamp)');
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });

  test('while the bundle is freshly changed the stamp is not trusted, even one the build wrote', async () => {
    const { root, bin } = await copyOfCli();
    try {
      // As the build does right after writing the bundle: the cache is written with this bundle's stamp.
      expect(await how(bin, { ...RECENT, RESYNC_WRITE_CODE_CACHE: '1' })).toBe('used (by content)');
      // A write in the same clock tick would keep that stamp: the content decides, and nothing is rewritten.
      expect(await how(bin, RECENT)).toBe('used (by content)');
      expect(await how(bin, RECENT)).toBe('used (by content)');
      // Settled: the stamp the build wrote is taken.
      expect(await how(bin, SETTLED)).toBe('used (by stamp)');
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });

  test('resync demo, whose generator and node:crypto load when it runs, makes, pushes and verifies its pair', async () => {
    const r = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
      execFile(CLI, ['demo', '--size', '1M', '--json'], { timeout: 120_000 }, (err, stdout, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? -1) : 0, stdout, stderr }));
    });
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ command: 'demo', ok: true, verified: true });
  });

  /** Run `node -r SPY bin args`: the preloaded spy prints the built-ins loaded, at exit. */
  async function withSpy(dir: string, bin: string, args: string[], env: Record<string, string> = {}): Promise<{ code: number; stderr: string; cache?: string; loaded: string[] }> {
    const spy = join(dir, 'spy.cjs');
    await writeFile(spy, "process.on('exit', () => process.stderr.write('loaded ' + process.moduleLoadList.filter((m) => m.startsWith('NativeModule ')).map((m) => m.slice(13)).join(' ') + '\\n'));\n");
    return new Promise((resolve) => {
      execFile(process.execPath, ['-r', spy, bin, ...args], { env: { ...process.env, RESYNC_TRACE: '1', ...env }, timeout: 60_000 }, (err, _stdout, stderr) =>
        resolve({
          code: err ? ((err as { code?: number }).code ?? -1) : 0,
          stderr,
          cache: /code cache (\w+(?: \(by \w+\))?)/.exec(stderr)?.[1],
          loaded: /^loaded (.*)$/m.exec(stderr)?.[1]?.split(' ') ?? [],
        }),
      );
    });
  }

  test('resync --version, its cache known by its stamp, loads no crypto, TLS, processes, compression, assert or fs/promises', async () => {
    const { root, bin } = await copyOfCli();
    try {
      // The first run has no cache for the spy's options and writes one, with the stamp.
      await withSpy(root, bin, ['--version'], SETTLED);
      const r = await withSpy(root, bin, ['--version'], SETTLED);
      expect(r.cache).toBe('used (by stamp)');
      expect(r.loaded).toContain('vm');
      // (Not node:net: Node writes to a pipe, as stdout and stderr are here, through a net socket.)
      expect(r.loaded.filter((m) => /^(crypto|tls|child_process|zlib|dgram|worker_threads|http|assert|fs\/promises)$/.test(m))).toEqual([]);
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });

  test('a push over TCP loads neither TLS (nor so the server) nor child processes (ssh)', async () => {
    const d = await mkdtemp(join(tmpdir(), 'resync-push-spy-'));
    await writeFile(join(d, 'secret'), 'a shared secret of the test, long enough\n', { mode: 0o600 });
    await writeFile(join(d, 'image.img'), Buffer.alloc(256 * 1024, 7));
    const { spawn } = await import('node:child_process');
    const server = spawn(process.execPath, [CLI, 'serve', '--listen', '127.0.0.1:0', '--secret-file', join(d, 'secret'), '--volume', `vol=${join(d, 'replica.img')}:rw`], { stdio: ['ignore', 'ignore', 'pipe'] });
    try {
      let log = '';
      server.stderr.on('data', (b: Buffer) => (log += b.toString()));
      const t0 = Date.now();
      while (!/listening on 127\.0\.0\.1:\d+/.test(log) && server.exitCode === null && Date.now() - t0 < 30_000) await new Promise((r) => setTimeout(r, 10));
      const port = /listening on 127\.0\.0\.1:(\d+)/.exec(log)?.[1];
      expect(port, log).toBeDefined();
      const r = await withSpy(d, CLI, ['push', '--quiet', '--secret-file', join(d, 'secret'), join(d, 'image.img'), `127.0.0.1:${port}/vol`]);
      expect(r.code, r.stderr).toBe(0);
      expect(r.loaded).toContain('net');
      expect(r.loaded.filter((m) => /^(tls|_tls_wrap|child_process|dgram|worker_threads|http|assert)$/.test(m))).toEqual([]);
      expect(await readFile(join(d, 'replica.img'))).toEqual(await readFile(join(d, 'image.img')));
    } finally {
      server.kill('SIGKILL');
      await rm(d, { recursive: true, force: true });
    }
  });
});

describe('-- ends the options, as getopt has it', () => {
  test('file names that start with a dash, after --, are files (signature, delta, patch)', async () => {
    const d = await mkdtemp(join(tmpdir(), 'resync-dashdash-'));
    try {
      const run = (...args: string[]): Promise<Run> =>
        new Promise((resolve) => {
          execFile(process.execPath, [CLI, ...args], { cwd: d, timeout: 60_000 }, (err, stdout, stderr) => resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr }));
        });
      const old = generateImage(256 * 1024, 41);
      const neu = Buffer.from(old);
      neu.fill(7, 1000, 9000);
      await writeFile(join(d, '-old.img'), old);
      await writeFile(join(d, '-new.img'), neu);
      // Without --, a name with a dash is an option (and refused).
      expect((await run('signature', '-old.img', '-old.sig')).code).toBe(2);
      expect((await run('signature', '--', '-old.img', '-old.sig')).code).toBe(0);
      expect((await run('delta', '--', '-old.sig', '-new.img', '-d.delta')).code).toBe(0);
      const p = await run('patch', '--', '-old.img', '-d.delta', '-out.img');
      expect(p.code, p.stderr).toBe(0);
      expect((await readFile(join(d, '-out.img'))).equals(neu)).toBe(true);
      // "-" after -- is still standard input/output.
      const s = await run('signature', '--', '-old.img', '-');
      expect(s.code).toBe(0);
      expect(s.stdout.length).toBeGreaterThan(0);
    } finally {
      await rm(d, { recursive: true, force: true });
    }
  });
});
