import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { deflateRawSync } from 'node:zlib';
import { deltaFile, patchFile, signatureFile } from '../../src/api/files.js';
import { push, pull } from '../../src/net/client.js';
import { literalFromZ } from '../../protocol/convert.js';
import { applyScenario, generateImage } from '../../src/testing/workload.js';
import { startServer, type TestServer } from '../helpers/server.js';

let dir: string;
let srv: TestServer;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'resync-z-'));
  srv = await startServer({ v: { path: join(dir, 'vol.img'), writable: true } });
});
afterAll(async () => {
  await srv.server.close();
  await rm(dir, { recursive: true, force: true });
  await rm(srv.dir, { recursive: true, force: true });
});

describe('compressed literals', () => {
  test('delta --compress is smaller on compressible data and patches identically', async () => {
    const basis = generateImage(6 << 20, 21);
    const target = Buffer.from(basis);
    target.fill(0x41, 1 << 20, 3 << 20); // 2 MiB of new, very compressible data
    await writeFile(join(dir, 'b.img'), basis);
    await writeFile(join(dir, 't.img'), target);
    await signatureFile(join(dir, 'b.img'), join(dir, 'b.sig'));
    const plain = await deltaFile(join(dir, 'b.sig'), join(dir, 't.img'), join(dir, 'plain.delta'));
    const z = await deltaFile(join(dir, 'b.sig'), join(dir, 't.img'), join(dir, 'z.delta'), { compress: true });
    expect(z.bytesOut).toBeLessThan(plain.bytesOut / 10);
    await patchFile(join(dir, 'b.img'), join(dir, 'z.delta'), join(dir, 'out.img'));
    expect((await readFile(join(dir, 'out.img'))).equals(target)).toBe(true);
    expect((await stat(join(dir, 'out.img'))).size).toBe(target.length);
  });

  test('push and pull with --compress send fewer bytes and give identical images', async () => {
    const basis = generateImage(8 << 20, 5);
    const target = applyScenario(basis, 'mixed', 6);
    target.fill(0, 2 << 20, 4 << 20);
    await writeFile(join(dir, 'vol.img'), basis);
    await writeFile(join(dir, 'src.img'), target);
    const opts = { host: '127.0.0.1', port: srv.port, secret: srv.secret, volume: 'v', blockSize: 4096 };
    const r = await push(join(dir, 'src.img'), { ...opts, compress: true });
    expect((await readFile(join(dir, 'vol.img'))).equals(target)).toBe(true);
    expect(r.bytesSent).toBeLessThan(r.literalBytes);
    await writeFile(join(dir, 'local.img'), basis);
    const p = await pull(join(dir, 'local.img'), { ...opts, compress: true });
    expect((await readFile(join(dir, 'local.img'))).equals(target)).toBe(true);
    expect(p.bytesReceived).toBeLessThan(p.literalBytes);
  });

  test('a decompression bomb or a wrong declared length is a typed error', () => {
    const bomb = deflateRawSync(Buffer.alloc(4 << 20));
    expect(() => literalFromZ({ type: 0x14, length: 1000, data: bomb })).toThrowError(expect.objectContaining({ code: 'ERR_CORRUPT' }));
    const short = deflateRawSync(Buffer.alloc(10));
    expect(() => literalFromZ({ type: 0x14, length: 11, data: short })).toThrowError(expect.objectContaining({ code: 'ERR_CORRUPT' }));
    expect(() => literalFromZ({ type: 0x14, length: 5, data: Buffer.from([1, 2, 3]) })).toThrowError(expect.objectContaining({ code: 'ERR_CORRUPT' }));
  });
});
