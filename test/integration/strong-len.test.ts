/**
 * The strong hash length a receiver chooses: a push or pull, whose result is
 * verified as a whole, sends short strong hashes (sessionStrongLen); a
 * compare, which nothing checks afterwards, keeps 16 bytes. Real TCP on
 * 127.0.0.1, real files.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DEFAULT_STRONG_LEN, MIN_STRONG_LEN, MAX_STRONG_LEN, sessionStrongLen } from '../../src/core/limits.js';
import { push, pull } from '../../src/net/client.js';
import { verifyRemote } from '../../src/api/verify.js';
import { generateImage } from '../../src/testing/workload.js';
import { startServer, type TestServer } from '../helpers/server.js';

const SIZE = 8 << 20;
const BS = 4096;
const BLOCKS = SIZE / BS;

let dir: string;
let srv: TestServer;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'resync-sl-'));
  srv = await startServer({ v: { path: join(dir, 'vol.img'), writable: true } });
});
afterAll(async () => {
  await srv.server.close();
  await rm(dir, { recursive: true, force: true });
  await rm(srv.dir, { recursive: true, force: true });
});

describe('sessionStrongLen', () => {
  test('8 bytes up to 512 MiB, one more for each 256x, within the protocol\'s bounds', () => {
    expect(sessionStrongLen(0)).toBe(8);
    expect(sessionStrongLen(SIZE)).toBe(8);
    expect(sessionStrongLen(512 * 2 ** 20)).toBe(8);
    expect(sessionStrongLen(512 * 2 ** 20 + 1)).toBe(9);
    expect(sessionStrongLen(128 * 2 ** 30)).toBe(9);
    expect(sessionStrongLen(128 * 2 ** 30 + 1)).toBe(10);
    for (let e = 0; e < 60; e++) {
      const n = sessionStrongLen(2 ** e);
      expect(n).toBeGreaterThanOrEqual(MIN_STRONG_LEN);
      expect(n).toBeLessThanOrEqual(Math.min(DEFAULT_STRONG_LEN, MAX_STRONG_LEN));
      // A false match below 2^-35 even with a comparison at every byte.
      expect(8 * n - e).toBeGreaterThanOrEqual(35);
    }
  });
});

describe('on the wire', () => {
  test('push and pull of changed data: 12 bytes a block of signature, and the images are right', async () => {
    const a = generateImage(SIZE, 1);
    const b = generateImage(SIZE, 2);
    await writeFile(join(dir, 'vol.img'), a);
    await writeFile(join(dir, 'src.img'), b);
    const opts = { host: '127.0.0.1', port: srv.port, secret: srv.secret, volume: 'v', blockSize: BS };
    const r = await push(join(dir, 'src.img'), opts);
    expect((await readFile(join(dir, 'vol.img'))).equals(b)).toBe(true);
    // Every block's sums came (nothing matched): 4 + 8 bytes each, and some framing; 16-byte hashes would be 20.
    expect(r.bytesReceived).toBeGreaterThan(BLOCKS * 12);
    expect(r.bytesReceived).toBeLessThan(BLOCKS * 14);

    await writeFile(join(dir, 'local.img'), a);
    const p = await pull(join(dir, 'local.img'), opts);
    expect((await readFile(join(dir, 'local.img'))).equals(b)).toBe(true);
    expect(p.bytesSent).toBeGreaterThan(BLOCKS * 12);
    expect(p.bytesSent).toBeLessThan(BLOCKS * 14);
  });

  test('a compare keeps 16-byte hashes', async () => {
    const a = generateImage(SIZE, 3);
    await writeFile(join(dir, 'vol.img'), a);
    await writeFile(join(dir, 'cmp.img'), a);
    const r = await verifyRemote(join(dir, 'cmp.img'), { host: '127.0.0.1', port: srv.port, secret: srv.secret, volume: 'v', blockSize: BS });
    expect(r.differingBytes).toBe(0);
    expect(r.bytesReceived).toBeGreaterThan(BLOCKS * 20);
  });
});
