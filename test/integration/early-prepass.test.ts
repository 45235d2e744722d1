/**
 * A push starts its hash pass before the session is open, under the spec the
 * server will most likely choose (net/client.ts, earlyPrepass). Where the
 * server's signature has that spec the pass is used; where it has another (a
 * volume of another size, the seed of the volume's signature cache, a block
 * size of the user's) it is cancelled and made again. Either way the volume
 * must come out equal to the image. Which of the two happened is read from
 * the trace of a real `resync push` (RESYNC_TRACE=1).
 */
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { makeSignatureParams } from '../../src/core/signature.js';
import { openImage } from '../../src/io/image.js';
import { sigCachePathFor } from '../../src/io/sigcache.js';
import { hashOwnImage, PassCancelled } from '../../src/net/sender.js';
import { generateImage } from '../../src/testing/workload.js';
import { runCli } from '../helpers/cli.js';
import { closeServers, startServer, type TestServer } from '../helpers/server.js';

const MAIN = resolve('dist/src/cli/main.js');
const MiB = 1024 * 1024;
const CANCELLED = 'early hash pass under another spec, cancelled';

let dir: string;
const servers: TestServer[] = [];
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'resync-early-pass-'));
});
afterAll(async () => {
  await closeServers(servers);
  await rm(dir, { recursive: true, force: true });
});

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/** `resync push IMAGE 127.0.0.1:PORT/v`, traced. */
async function pushTraced(s: TestServer, image: string, extra: string[] = []): Promise<{ code: number; cancelled: boolean; stderr: string }> {
  const r = await runCli(MAIN, ['push', '-q', ...extra, '--secret-file', s.secretFile, image, `127.0.0.1:${s.port}/v`], { env: { RESYNC_TRACE: '1' } });
  return { code: r.code, cancelled: r.stderr.includes(CANCELLED), stderr: r.stderr };
}

/** A slightly changed copy of `b`. */
function changed(b: Buffer, seed: number): Buffer {
  const c = Buffer.from(b);
  for (let k = 0; k < 20; k++) {
    const i = (seed * 7919 + k * 104729) % c.length;
    c[i] = c[i]! ^ 0x5a;
  }
  return c;
}

describe('the hash pass a push starts before its session is open', () => {
  test('used when the volume has the image size; cancelled and made again under the server spec otherwise; the volume is right every time', { timeout: 60_000 }, async () => {
    const size = 24 * MiB;
    const v0 = generateImage(size, 41);
    const vol = join(dir, 'vol.img');
    await writeFile(vol, v0);
    const s = await startServer({ v: { path: vol, writable: true } });
    servers.push(s);

    // Same size, no signature cache yet: the server takes the offered seed and its default spec.
    const img1 = join(dir, 'img1.img');
    const t1 = changed(v0, 1);
    await writeFile(img1, t1);
    const first = await pushTraced(s, img1);
    expect(first.code, first.stderr).toBe(0);
    expect(first.cancelled).toBe(false);
    expect(sha(await readFile(vol))).toBe(sha(t1));

    // The volume now has a signature cache (written once the result is sent): its signature keeps the cache's seed, not the one offered.
    for (let k = 0; k < 100 && !existsSync(sigCachePathFor(vol)!); k++) await sleep(50);
    expect(existsSync(sigCachePathFor(vol)!)).toBe(true);
    const img2 = join(dir, 'img2.img');
    const t2 = changed(t1, 2);
    await writeFile(img2, t2);
    const second = await pushTraced(s, img2);
    expect(second.code, second.stderr).toBe(0);
    expect(second.cancelled).toBe(true);
    expect(sha(await readFile(vol))).toBe(sha(t2));

    // An image of another size than the volume: the server's block size comes from the larger.
    const img3 = join(dir, 'img3.img');
    const t3 = Buffer.concat([changed(t2, 3), generateImage(40 * MiB, 42)]);
    await writeFile(img3, t3);
    const third = await pushTraced(s, img3, ['--block-size', '65536']);
    expect(third.code, third.stderr).toBe(0);
    expect(sha(await readFile(vol))).toBe(sha(t3));
  });

  test('a cancelled pass stops at its next piece and rejects with PassCancelled', async () => {
    const path = join(dir, 'cancel.img');
    await writeFile(path, generateImage(16 * MiB, 43));
    const img = await openImage(path);
    try {
      const params = makeSignatureParams(img.size, Buffer.alloc(16, 9), { blockSize: 32768 });
      const control = { cancelled: false };
      let pieces = 0;
      const pass = hashOwnImage(
        img,
        params,
        0,
        null,
        () => {
          pieces++;
          control.cancelled = true;
        },
        undefined,
        control,
      );
      await expect(pass).rejects.toBeInstanceOf(PassCancelled);
      expect(pieces).toBe(1);
      // Not cancelled, the same pass runs to its end.
      const whole = await hashOwnImage(img, params, 0, null, undefined, undefined, { cancelled: false });
      expect(whole.own.length).toBe((16 * MiB) / 32768 * params.strongLen);
    } finally {
      await img.fh.close();
    }
  });
});
