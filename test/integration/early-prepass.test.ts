/**
 * A push starts its hash pass before the session is open, under the spec the
 * server will most likely choose (net/client.ts, earlyPrepass). Where the
 * server's signature has that spec the pass is used; where it has another (a
 * volume of another size, the seed of the volume's signature cache, a block
 * size of the user's) it is cancelled and made again. The spec the server
 * took is remembered in the state directory (io/spec-memo.ts), so the next
 * push from there to the same volume guesses its signature cache's seed.
 * Either way the volume must come out equal to the image. Which of the two
 * happened is read from the trace of a real `resync push` (RESYNC_TRACE=1).
 */
import { createHash } from 'node:crypto';
import { statSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { makeSignatureParams } from '../../src/core/signature.js';
import { openImage } from '../../src/io/image.js';
import { sigCachePathFor } from '../../src/io/sigcache.js';
import { recallSpec, specMemoPath } from '../../src/io/spec-memo.js';
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

/**
 * Write `content` to `name` and `resync push` it to volume `v` (at `vol`), traced: it must succeed and
 * leave the volume equal to it. Returns whether the early pass was cancelled.
 */
async function pushChecked(s: TestServer, vol: string, name: string, content: Buffer, extra: string[] = []): Promise<boolean> {
  const image = join(dir, name);
  await writeFile(image, content);
  const r = await runCli(MAIN, ['push', '-q', ...extra, '--secret-file', s.secretFile, image, `127.0.0.1:${s.port}/v`], { env: { RESYNC_TRACE: '1' } });
  expect(r.code, r.stderr).toBe(0);
  expect(sha(await readFile(vol))).toBe(sha(content));
  return r.stderr.includes(CANCELLED);
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
    // Two pushing sides, each with a state directory of its own.
    const [a, b] = [join(dir, 'state-a'), join(dir, 'state-b')];
    const cache = sigCachePathFor(vol)!;
    /** Which signature cache file is there: none, or one (a new one is a new file, renamed in, whose inode may be the old one's). */
    const which = (): string => {
      const st = statSync(cache, { throwIfNoEntry: false, bigint: true });
      return st ? `${st.ino}:${st.mtimeNs}` : 'none';
    };
    /** Push, then wait for the signature cache the push leaves (written after the result is sent). */
    const pushed = async (name: string, content: Buffer, state: string): Promise<boolean> => {
      const before = which();
      const cancelled = await pushChecked(s, vol, name, content, ['--state-dir', state]);
      for (let k = 0; k < 100 && (which() === before || which() === 'none'); k++) await sleep(50);
      expect(which()).not.toBe(before);
      expect(which()).not.toBe('none');
      return cancelled;
    };

    // Same size, no signature cache yet: the server takes the offered seed and its default spec.
    const t1 = changed(v0, 1);
    expect(await pushed('img1.img', t1, a)).toBe(false);
    // The volume now has a signature cache under the seed A offered. B never pushed: its seed is new,
    // and the signature keeps the cache's.
    const t2 = changed(t1, 2);
    expect(await pushed('img2.img', t2, b)).toBe(true);
    // B remembers the spec the server took (the cache's, which its push wrote again): its next pass is used.
    const t3 = changed(t2, 3);
    expect(await pushed('img3.img', t3, b)).toBe(false);
    // The cache lost, a third side pushes: the server takes its seed, and the cache has that one now.
    await rm(cache);
    const t4 = changed(t3, 4);
    expect(await pushed('img4.img', t4, join(dir, 'state-c'))).toBe(false);
    // A remembers the seed of its own push, which the cache no longer has; then the cache's.
    const t5 = changed(t4, 5);
    expect(await pushed('img5.img', t5, a)).toBe(true);
    const t6 = changed(t5, 6);
    expect(await pushed('img6.img', t6, a)).toBe(false);

    // What A remembers, damaged: only a guess, so the push still goes right (its pass made again).
    const memo = specMemoPath(a, `127.0.0.1:${s.port}/v`);
    expect(recallSpec(memo, size)?.params.blockSize).toBeGreaterThan(0);
    await writeFile(memo, (await readFile(memo, 'utf8')).replace('"seed":"', '"seed":"zz'));
    expect(recallSpec(memo, size)).toBeNull();
    const t7 = changed(t6, 7);
    expect(await pushed('img7.img', t7, a)).toBe(true);
    // ... and written again by that push, for this image size only.
    expect(recallSpec(memo, size)).not.toBeNull();
    expect(recallSpec(memo, size + 1)).toBeNull();

    // An image of another size than the volume, and a block size of the user's.
    await pushChecked(s, vol, 'img8.img', Buffer.concat([changed(t7, 8), generateImage(40 * MiB, 42)]), ['--block-size', '65536', '--state-dir', b]);
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
