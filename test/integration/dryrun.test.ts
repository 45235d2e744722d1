/**
 * --dry-run: push and delta dry runs report exactly what the real operation
 * then does, pull's estimate is close to it, nothing is written anywhere;
 * and --bwlimit holds a push to its rate. The CLI cases need a build
 * (npx tsc -p tsconfig.json).
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { runCli, type CliRun } from '../helpers/cli.js';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { generateImage, makePair, type Scenario } from '../../src/testing/workload.js';
import { dryRunDelta, dryRunPull, dryRunPush, frameBytes } from '../../src/api/dry-run.js';
import { deltaFile, signatureFile } from '../../src/api/files.js';
import { pull, push, type ClientOptions } from '../../src/net/client.js';
import { MsgType } from '../../protocol/constants.js';
import { startServer, type TestServer } from '../helpers/server.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const CLI = join(ROOT, 'dist/src/cli/main.js');
const MiB = 1024 * 1024;
const SIZE = 3 * MiB + 777;
const SCEN: Scenario[] = ['scattered', 'shifted', 'mixed'];

let dir: string;
let srv: TestServer;
const pairs = new Map<Scenario, { basis: string; target: string; edits: number }>();

const p = (...parts: string[]): string => join(dir, ...parts);

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'resync-dryrun-'));
  const volumes: Record<string, { path: string; writable: boolean }> = {};
  for (const [k, s] of SCEN.entries()) {
    await mkdir(p(s));
    const pair = await makePair(p(s), s, SIZE, 20 + k);
    pairs.set(s, { basis: pair.basis, target: pair.target, edits: pair.stats.edits });
    await copyFile(pair.basis, p(s, 'vol.img'));
    volumes[`push-${s}`] = { path: p(s, 'vol.img'), writable: true };
    volumes[`pull-${s}`] = { path: pair.target, writable: false };
  }
  await writeFile(p('random.img'), generateImage(MiB, 99).map((x, i) => x ^ (i * 7)));
  await writeFile(p('slow.img'), Buffer.alloc(0));
  volumes.slow = { path: p('slow.img'), writable: true };
  volumes.small = { path: p('small-vol.img'), writable: true };
  srv = await startServer(volumes);
});

afterAll(async () => {
  await srv?.server.close();
  if (srv) await rm(srv.dir, { recursive: true, force: true });
  if (dir) await rm(dir, { recursive: true, force: true });
});

function remote(volume: string, extra: Partial<ClientOptions> = {}): ClientOptions {
  return { host: '127.0.0.1', port: srv.port, secret: srv.secret, volume, ...extra };
}

function stats(r: { matchedBytes: number; literalBytes: number; copyOps: number; literalOps: number }): number[] {
  return [r.matchedBytes, r.literalBytes, r.copyOps, r.literalOps];
}

describe('dryRunPush', () => {
  test.each(SCEN)('%s: reports exactly what the push then sends, and writes nothing', async (s) => {
    const { basis, target } = pairs.get(s)!;
    const vol = p(s, 'vol.img');
    const dry = await dryRunPush(target, remote(`push-${s}`));
    expect((await readFile(vol)).equals(await readFile(basis))).toBe(true);
    expect(existsSync(`${vol}.resync-journal`)).toBe(false);
    expect(dry.upToDate).toBe(false);
    expect(dry.estimated).toBe(false);
    expect(dry.imageSize).toBe((await readFile(target)).length);
    expect(dry.basisSize).toBe(SIZE);

    const real = await push(target, remote(`push-${s}`));
    expect(stats(real)).toEqual(stats(dry));
    // The push sends what the dry run sent, minus its Result, with Open(push)
    // for Open(verify), plus the delta (and, for a two-level signature, a
    // region bitmap of a few bytes).
    const open = (mode: 'push' | 'verify'): number => frameBytes({ type: MsgType.Open, mode, volume: `push-${s}`, imageSize: dry.imageSize, blockSize: 0, resumeId: '' });
    const result = frameBytes({ type: MsgType.Result, ok: false, bytesWritten: 0, targetHash: new Uint8Array(32) });
    const expected = dry.bytesSent - result - open('verify') + open('push') + dry.deltaBytes;
    expect(Math.abs(real.bytesSent - expected)).toBeLessThanOrEqual(64);

    const again = await dryRunPush(target, remote(`push-${s}`));
    expect(again.upToDate).toBe(true);
    expect(again.literalBytes).toBe(0);
  });
});

describe('dryRunPush where the push asks for sub-block sums', () => {
  test('small writes into large blocks: estimated, and an upper bound of what the push sends', async () => {
    // 32 KiB blocks of 4 KiB sub-blocks; one 4 KiB write into every 8th block.
    const basis = Buffer.alloc(SIZE);
    for (let i = 0; i < SIZE; i += 32) createHash('sha256').update(`b${i}`).digest().copy(basis, i);
    const target = Buffer.from(basis);
    for (let at = 4096; at + 4096 <= SIZE; at += 8 * 32 * 1024) target.fill(0x5a, at, at + 4096);
    await writeFile(p('small-vol.img'), basis);
    await writeFile(p('small-src.img'), target);
    const o = remote('small', { blockSize: 32 * 1024 });
    const dry = await dryRunPush(p('small-src.img'), o);
    expect(dry.estimated).toBe(true);
    expect((await readFile(p('small-vol.img'))).equals(basis)).toBe(true);
    const real = await push(p('small-src.img'), o);
    expect((await readFile(p('small-vol.img'))).equals(target)).toBe(true);
    expect(real.literalBytes).toBeLessThan(dry.literalBytes);
    expect(real.literalBytes).toBeGreaterThan(0);
  });
});

describe('dryRunPull', () => {
  test.each(SCEN)('%s: estimates what the pull then receives, and writes nothing', async (s) => {
    const { basis, target, edits } = pairs.get(s)!;
    const local = p(s, 'local.img');
    await copyFile(basis, local);
    const dry = await dryRunPull(local, remote(`pull-${s}`));
    expect((await readFile(local)).equals(await readFile(basis))).toBe(true);
    expect(existsSync(`${local}.resync-journal`)).toBe(false);
    expect(dry.estimated).toBe(true);
    expect(dry.upToDate).toBe(false);
    expect(dry.matchedBytes + dry.literalBytes).toBe(dry.imageSize);

    const real = await pull(local, remote(`pull-${s}`));
    expect((await readFile(local)).equals(await readFile(target))).toBe(true);
    // Block granularity on the other side: off by at most about a block per edit
    // each way, and high by the zeros of changed blocks that the real delta
    // copies in place (at most one block per changed block, two per edit).
    const slack = (edits + 1) * dry.blockSize * 2;
    expect(real.literalBytes, `dry ${dry.literalBytes} real ${real.literalBytes}`).toBeLessThanOrEqual(dry.literalBytes + slack);
    expect(dry.literalBytes, `dry ${dry.literalBytes} real ${real.literalBytes}`).toBeLessThanOrEqual(real.literalBytes + 2 * slack);
    // What the pull received besides the delta is a few small handshake frames.
    expect(real.bytesReceived).toBeLessThanOrEqual(dry.deltaBytes + slack + 512);
    expect(dry.deltaBytes).toBeLessThanOrEqual(real.bytesReceived + 2 * slack + 512);
    expect(dry.copyOps).toBeLessThanOrEqual(real.copyOps + edits + 1);
    // Images this small get one-level signatures, which the estimate counts.
    expect(Math.abs(dry.signatureBytes - real.bytesSent)).toBeLessThanOrEqual(512);

    const again = await dryRunPull(local, remote(`pull-${s}`));
    expect(again.upToDate).toBe(true);
    expect(again.literalBytes).toBe(0);
  });
});

describe('dryRunDelta', () => {
  test.each(SCEN)('%s: the exact size and ops of the delta file, which is not written', async (s) => {
    const { basis, target } = pairs.get(s)!;
    const sig = p(s, 'basis.sig');
    await signatureFile(basis, sig);
    const dry = await dryRunDelta(sig, target);
    const real = await deltaFile(sig, target, p(s, 'real.delta'));
    expect(stats(dry)).toEqual(stats(real));
    expect(dry.deltaBytes).toBe(real.bytesOut);
    expect(dry.upToDate).toBe(false);
    const same = await dryRunDelta(sig, basis);
    expect(same.upToDate).toBe(true);
    expect(same.literalBytes).toBe(0);
  });
});

describe('dry runs with compression', () => {
  test('delta --compress: the exact compressed delta size', async () => {
    const { basis, target } = pairs.get('mixed')!;
    const sig = p('mixed', 'z.sig');
    await signatureFile(basis, sig);
    const dry = await dryRunDelta(sig, target, { compress: true });
    const real = await deltaFile(sig, target, p('mixed', 'z.delta'), { compress: true });
    expect(dry.deltaBytes).toBe(real.bytesOut);
    expect(dry.deltaBytes).toBeLessThan((await dryRunDelta(sig, target)).deltaBytes);
  });

  test('push --compress: the compressed delta is what the push sends', async () => {
    const { basis, target } = pairs.get('mixed')!;
    const vol = p('mixed', 'vol.img');
    await copyFile(basis, vol);
    const plain = await dryRunPush(target, remote('push-mixed'));
    const dry = await dryRunPush(target, remote('push-mixed', { compress: true }));
    expect(dry.deltaBytes).toBeLessThan(plain.deltaBytes);
    const real = await push(target, remote('push-mixed', { compress: true }));
    expect(Math.abs(real.bytesSent - (dry.bytesSent + dry.deltaBytes))).toBeLessThanOrEqual(128);
  });
});

describe('--bwlimit', () => {
  test('a push of 1 MiB of new data at 2 MiB/s takes at least ~0.4 s and still verifies', async () => {
    const t0 = performance.now();
    const r = await push(p('random.img'), remote('slow', { bwlimit: 2 * MiB }));
    const ms = performance.now() - t0;
    expect(r.verified).toBe(true);
    expect(r.literalBytes).toBe(MiB);
    expect(ms).toBeGreaterThanOrEqual(400);
    expect((await readFile(p('slow.img'))).equals(await readFile(p('random.img')))).toBe(true);
  });
});

const cli = (...args: string[]): Promise<CliRun> => runCli(CLI, args, { timeoutMs: 30_000 });

describe.runIf(existsSync(CLI))('CLI --dry-run and --bwlimit', () => {
  test('delta --dry-run writes no delta file', async () => {
    const { basis, target } = pairs.get('mixed')!;
    const sig = p('cli.sig');
    expect((await cli('signature', basis, sig, '-q')).code).toBe(0);
    const r = await cli('delta', sig, target, p('cli.delta'), '--dry-run', '--json');
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ command: 'delta', ok: true, dryRun: true, upToDate: false });
    expect(existsSync(p('cli.delta'))).toBe(false);
    const rd = await cli('delta', sig, target, p('cli.delta'), '--dry-run', '--format', 'rdiff');
    expect(rd.code).toBe(2);
    expect(existsSync(p('cli.delta'))).toBe(false);
  });

  test('push and pull --dry-run leave both sides alone', async () => {
    const { basis, target } = pairs.get('shifted')!;
    await copyFile(basis, p('shifted', 'vol.img'));
    const before = await readFile(p('shifted', 'vol.img'));
    const r = await cli('push', target, `127.0.0.1:${srv.port}/push-shifted`, '--secret-file', srv.secretFile, '--dry-run', '--json', '--bwlimit', '10M');
    expect(r.code).toBe(0);
    const j = JSON.parse(r.stdout) as Record<string, unknown>;
    expect(j).toMatchObject({ command: 'push', dryRun: true, upToDate: false });
    expect(j.deltaBytes).toBeGreaterThan(0);
    expect((await readFile(p('shifted', 'vol.img'))).equals(before)).toBe(true);
    await copyFile(basis, p('shifted', 'cli-local.img'));
    const q = await cli('pull', `127.0.0.1:${srv.port}/pull-shifted`, p('shifted', 'cli-local.img'), '--secret-file', srv.secretFile, '--dry-run', '--json');
    expect(q.code).toBe(0);
    expect(JSON.parse(q.stdout)).toMatchObject({ command: 'pull', dryRun: true, estimated: true });
    expect((await readFile(p('shifted', 'cli-local.img'))).equals(before)).toBe(true);
  });

  test('pull --dry-run into a file that does not exist yet: the whole image as literal data, and still no file', async () => {
    const missing = p('shifted', 'not-yet.img');
    const q = await cli('pull', `127.0.0.1:${srv.port}/pull-shifted`, missing, '--secret-file', srv.secretFile, '--dry-run', '--json');
    expect(q.code, q.stderr).toBe(0);
    const j = JSON.parse(q.stdout) as Record<string, number | boolean>;
    expect(j).toMatchObject({ command: 'pull', dryRun: true, upToDate: false, basisSize: 0, matchedBytes: 0 });
    expect(j.literalBytes).toBe(j.imageSize);
    expect(j.imageSize).toBeGreaterThan(0);
    expect(existsSync(missing)).toBe(false);
    // A missing directory is still an error, as for the real pull.
    const r = await cli('pull', `127.0.0.1:${srv.port}/pull-shifted`, p('shifted', 'no-dir', 'x.img'), '--secret-file', srv.secretFile, '--dry-run', '--json');
    expect(r.code).toBe(5);
  });

  test('a bad --bwlimit is a usage error', async () => {
    const r = await cli('push', p('random.img'), `127.0.0.1:${srv.port}/slow`, '--secret-file', srv.secretFile, '--bwlimit', 'fast');
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('bandwidth limit');
  });
});
