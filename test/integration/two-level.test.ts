import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { push, pull } from '../../src/net/client.js';
import { applyScenario, generateImage, SCENARIOS } from '../../src/testing/workload.js';
import { startServer, type TestServer } from '../helpers/server.js';

let dir: string;
let srv: TestServer;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'resync-2l-'));
  srv = await startServer({ v: { path: join(dir, 'vol.img'), writable: true } });
});
afterAll(async () => {
  await srv.server.close();
  await rm(dir, { recursive: true, force: true });
  await rm(srv.dir, { recursive: true, force: true });
});

const SIZE = 12 << 20;
const BS = 4096; // 256 blocks per 1 MiB region: two-level signatures kick in

describe('two-level signatures (region hashes first, block sums on request)', () => {
  test.each(SCENARIOS.map((s) => [s]))('push %s: identical result', async (scenario) => {
    const basis = generateImage(SIZE, 7);
    const target = applyScenario(basis, scenario, 11);
    await writeFile(join(dir, 'vol.img'), basis);
    await writeFile(join(dir, 'src.img'), target);
    const r = await push(join(dir, 'src.img'), { host: '127.0.0.1', port: srv.port, secret: srv.secret, volume: 'v', blockSize: BS });
    expect((await readFile(join(dir, 'vol.img'))).equals(target)).toBe(true);
    const flatSig = (SIZE / BS) * 20;
    if (scenario === 'identical') {
      // 12 region hashes and no block sums instead of 3072 x 20 bytes
      expect(r.bytesReceived).toBeLessThan(flatSig / 20);
      expect(r.literalBytes).toBe(0);
    }
    if (scenario === 'scattered') expect(r.literalBytes).toBeLessThan(SIZE / 10);
    if (scenario === 'shifted' || scenario === 'mixed') expect(r.literalBytes).toBeLessThan(SIZE / 4);
  });

  test('pull with a two-level signature from the client', async () => {
    const basis = generateImage(SIZE, 3);
    const target = applyScenario(basis, 'mixed', 5);
    await writeFile(join(dir, 'vol.img'), target);
    await writeFile(join(dir, 'local.img'), basis);
    const r = await pull(join(dir, 'local.img'), { host: '127.0.0.1', port: srv.port, secret: srv.secret, volume: 'v', blockSize: BS });
    expect(r.verified).toBe(true);
    expect((await readFile(join(dir, 'local.img'))).equals(target)).toBe(true);
  });

  test('a block moved out of an unchanged region is still found (sender fills identical regions from its own data)', async () => {
    const basis = generateImage(SIZE, 9);
    const target = Buffer.from(basis);
    // copy 64 KiB from region 2 (unchanged) over the start of region 9 (changed)
    basis.copy(target, 9 * (1 << 20) + 100, 2 * (1 << 20), 2 * (1 << 20) + 65536);
    await writeFile(join(dir, 'vol.img'), basis);
    await writeFile(join(dir, 'src.img'), target);
    const r = await push(join(dir, 'src.img'), { host: '127.0.0.1', port: srv.port, secret: srv.secret, volume: 'v', blockSize: BS });
    expect((await readFile(join(dir, 'vol.img'))).equals(target)).toBe(true);
    expect(r.literalBytes).toBeLessThan(3 * BS);
  });
});
