/**
 * --bwlimit over real sockets on 127.0.0.1: a push and a pull are both held
 * to the rate (a pull's bulk is what the server sends, limited by the client
 * reading no faster than the rate), and the rate is read with rsync's units.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { pull, push, type ClientOptions } from '../../src/net/client.js';
import { parseBwlimit } from '../../src/cli/options.js';
import { startServer, type TestServer } from '../helpers/server.js';

const MiB = 1024 * 1024;
const SIZE = 3 * MiB;
const RATE = 2 * MiB;

let dir: string;
let srv: TestServer;
let data: Buffer;
/** Seconds the limited pull took. */
let limitedPull = 0;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'resync-bwlimit-'));
  data = randomBytes(SIZE);
  await writeFile(join(dir, 'src.img'), data);
  await writeFile(join(dir, 'pushed.img'), Buffer.alloc(0));
  srv = await startServer({
    pushed: { path: join(dir, 'pushed.img'), writable: true },
    source: { path: join(dir, 'src.img'), writable: false },
  });
});

afterAll(async () => {
  await srv?.server.close();
  if (srv) await rm(srv.dir, { recursive: true, force: true });
  if (dir) await rm(dir, { recursive: true, force: true });
});

const opts = (volume: string, bwlimit?: number): ClientOptions => ({ host: '127.0.0.1', port: srv.port, secret: srv.secret, volume, bwlimit });

// 3 MiB of literal data at 2 MiB/s: ~1.5 s. The lower bound leaves room for
// the bucket's burst and what the kernel buffers; the upper one for a busy machine.
describe('--bwlimit holds both directions to the rate', () => {
  test('push: what the client sends', async () => {
    const t0 = performance.now();
    const r = await push(join(dir, 'src.img'), opts('pushed', RATE));
    const s = (performance.now() - t0) / 1000;
    expect(r.literalBytes).toBe(SIZE);
    expect(s).toBeGreaterThan(1.1);
    expect(s).toBeLessThan(20);
    expect(r.bytesSent / s).toBeLessThan(RATE * 1.3);
    expect((await readFile(join(dir, 'pushed.img'))).equals(data)).toBe(true);
  });

  test('pull: what the server sends is slowed by the client reading at the rate', async () => {
    const local = join(dir, 'pulled.img');
    await writeFile(local, Buffer.alloc(SIZE));
    const t0 = performance.now();
    const r = await pull(local, opts('source', RATE));
    const s = (performance.now() - t0) / 1000;
    // Random data over a zero image: all literal but for a zero byte at either end, which is copied in place.
    expect(r.literalBytes).toBeGreaterThan(SIZE - 16);
    expect(r.bytesReceived).toBeGreaterThan(SIZE - 16);
    expect(s).toBeGreaterThan(1.1);
    expect(s).toBeLessThan(20);
    expect(r.bytesReceived / s).toBeLessThan(RATE * 1.3);
    expect((await readFile(local)).equals(data)).toBe(true);
    limitedPull = s;
  });

  test('pull without a limit is much faster (the bound above is the limit, not the machine)', async () => {
    const local = join(dir, 'pulled-fast.img');
    await writeFile(local, Buffer.alloc(SIZE));
    const t0 = performance.now();
    await pull(local, opts('source'));
    expect(limitedPull).toBeGreaterThan(0);
    expect((performance.now() - t0) / 1000).toBeLessThan(limitedPull / 2);
  });
});

describe('rsync units', () => {
  test.each([
    ['100', 100 * 1024],
    ['1.5m', 1.5 * MiB],
    ['500K', 500 * 1024],
    ['500KiB', 500 * 1024],
    ['10MB', 10_000_000],
    ['2g', 2 * 1024 * MiB],
    ['4096b', 4096],
  ])('%s is %d bytes/s', (s, n) => {
    expect(parseBwlimit(s)).toBe(n);
  });

  test('0 is no limit; below 1 KiB/s and junk are usage errors', () => {
    expect(parseBwlimit('0')).toBeUndefined();
    expect(parseBwlimit(undefined)).toBeUndefined();
    for (const bad of ['100b', 'fast', '-1', '1X', '']) expect(() => parseBwlimit(bad), bad).toThrow(expect.objectContaining({ code: 'ERR_PARAM' }));
  });
});
