import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { push, pull } from '../../src/net/client.js';
import { startServer, type TestServer } from '../helpers/server.js';

let dir: string;
let srv: TestServer;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'resync-net-'));
  srv = await startServer({
    rec: { path: join(dir, 'recovery.img'), writable: true },
    ro: { path: join(dir, 'readonly.img'), writable: false },
  });
});
afterAll(async () => {
  await srv.server.close();
  await rm(dir, { recursive: true, force: true });
  await rm(srv.dir, { recursive: true, force: true });
});

describe('push and pull over 127.0.0.1', () => {
  test('push makes the remote identical, pull brings it back', async () => {
    const base = randomBytes(3 << 20);
    const primary = Buffer.concat([base.subarray(0, 100_000), randomBytes(777), base.subarray(100_000)]);
    await writeFile(join(dir, 'recovery.img'), base);
    await writeFile(join(dir, 'primary.img'), primary);
    const opts = { host: '127.0.0.1', port: srv.port, secret: srv.secret };
    const r = await push(join(dir, 'primary.img'), { ...opts, volume: 'rec' });
    expect(r.verified).toBe(true);
    expect(r.literalBytes).toBeLessThan(200_000);
    expect((await readFile(join(dir, 'recovery.img'))).equals(primary)).toBe(true);

    // failback: local copy drifted; pull makes it identical to the server's
    const drifted = Buffer.from(primary);
    drifted.fill(7, 5000, 9000);
    await writeFile(join(dir, 'local.img'), drifted);
    const p = await pull(join(dir, 'local.img'), { ...opts, volume: 'rec' });
    expect(p.verified).toBe(true);
    expect((await readFile(join(dir, 'local.img'))).equals(primary)).toBe(true);
  });

  test('push to a read-only volume is refused and the volume untouched', async () => {
    const orig = randomBytes(100_000);
    await writeFile(join(dir, 'readonly.img'), orig);
    await writeFile(join(dir, 'src.img'), randomBytes(100_000));
    await expect(push(join(dir, 'src.img'), { host: '127.0.0.1', port: srv.port, secret: srv.secret, volume: 'ro' })).rejects.toMatchObject({
      code: 'ERR_PERMISSION',
    });
    expect((await readFile(join(dir, 'readonly.img'))).equals(orig)).toBe(true);
  });

  test('a wrong secret is refused', async () => {
    await writeFile(join(dir, 'src2.img'), randomBytes(1000));
    await expect(push(join(dir, 'src2.img'), { host: '127.0.0.1', port: srv.port, secret: Buffer.from('not the secret at all!!'), volume: 'rec' })).rejects.toMatchObject({
      code: 'ERR_AUTH',
    });
  });
});
