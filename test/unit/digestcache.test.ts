/**
 * The primary's digest cache (io/digestcache.ts): written from a full pass,
 * advanced by a dirty push only when the server's image hash before the
 * push is the cache's, and a server's hash after it that the cached list
 * with the dirty digests in does not give is ERR_VERIFY_FAILED.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { mkdtemp, readFile, readdir, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { DIGEST_CACHE_HEADER, DigestCacheWriter, advanceDigestCache, defaultStateDir, digestCachePath } from '../../src/io/digestcache.js';
import { imageHashFromDigests } from '../../src/core/imagehash.js';
import { makeSignatureParams, type SignatureParams } from '../../src/core/signature.js';
import { StrongHasher } from '../../src/core/strong.js';

let dir: string;
const BS = 4096;
const SIZE = 40 * BS + 100;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'resync-digc-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

function digestsOf(img: Buffer, p: SignatureParams): Buffer {
  const h = new StrongHasher(p.strongAlg, p.seed, 32);
  const n = Math.ceil(img.length / p.blockSize);
  const out = Buffer.alloc(n * 32);
  for (let i = 0; i < n; i++) out.set(h.hash(img, i * p.blockSize, Math.min(img.length, (i + 1) * p.blockSize)).subarray(0, 32), i * 32);
  return out;
}

/** A cache of `img` at `path`, as a full push writes it. */
async function seed(path: string, img: Buffer, p: SignatureParams): Promise<Buffer> {
  const d = digestsOf(img, p);
  const w = await DigestCacheWriter.start(path);
  for (let i = 0; i < d.length / 32; i++) w!.add(i, d.subarray(i * 32, i * 32 + 32));
  const hash = imageHashFromDigests(img.length, p, d);
  expect(await w!.finish(p, hash)).toBe(true);
  return hash;
}

/** The primary after writing blocks 3, 4 and 39 (the last, short one), and what a dirty push knows of it. */
function dirtied(img: Buffer, p: SignatureParams) {
  const now = Buffer.from(img);
  randomBytes(2 * BS).copy(now, 3 * BS);
  randomBytes(100).copy(now, 40 * BS);
  const all = digestsOf(now, p);
  const digests = Buffer.concat([all.subarray(3 * 32, 5 * 32), all.subarray(40 * 32, 41 * 32)]);
  return { now, digests, runs: [[3, 5], [40, 41]] as [number, number][], after: imageHashFromDigests(now.length, p, all) };
}

describe('digest cache', () => {
  test('paths: one file per export and replica; the state directory follows XDG_STATE_HOME', () => {
    const a = digestCachePath('/s', 'nbd+unix:///vm?socket=/run/vm.sock', 'dr:7873/vm');
    expect(a).toMatch(/^\/s\/digests-[0-9a-f]{32}$/);
    expect(digestCachePath('/s', 'nbd+unix:///vm?socket=/run/vm.sock', 'dr2:7873/vm')).not.toBe(a);
    expect(defaultStateDir({ XDG_STATE_HOME: '/x/state' })).toBe('/x/state/resync');
    expect(defaultStateDir({ XDG_STATE_HOME: 'relative' })).toMatch(/\.local\/state\/resync$/);
  });

  test('a matching cache verifies the whole image and is updated; the next push goes on from it', async () => {
    const p = makeSignatureParams(SIZE, randomBytes(16), { blockSize: BS });
    const path = join(dir, 'ok');
    const img = randomBytes(SIZE);
    const before = await seed(path, img, p);
    const d = dirtied(img, p);
    expect(await advanceDigestCache(path, { params: p, before, ...d })).toBe(true);
    // The updated file is the cache of the new image, byte for byte what a full pass writes.
    await seed(join(dir, 'ok-fresh'), d.now, p);
    expect((await readFile(path)).equals(await readFile(join(dir, 'ok-fresh')))).toBe(true);
    expect((await stat(path)).mode & 0o777).toBe(0o600);
    expect((await readdir(dir)).filter((f) => f.endsWith('.tmp'))).toEqual([]);
  });

  test("the server's hash after the push differs: ERR_VERIFY_FAILED naming the replica, and the cache is gone", async () => {
    const p = makeSignatureParams(SIZE, randomBytes(16), { blockSize: BS });
    const path = join(dir, 'bad-after');
    const img = randomBytes(SIZE);
    const before = await seed(path, img, p);
    const d = dirtied(img, p);
    await expect(advanceDigestCache(path, { ...d, params: p, before, after: randomBytes(32) })).rejects.toMatchObject({
      code: 'ERR_VERIFY_FAILED',
      message: /differs outside the dirty blocks/,
    });
    await expect(stat(path)).rejects.toMatchObject({ code: 'ENOENT' });
  });

  test('no whole-image verdict from a cache that does not apply; each is dropped', async () => {
    const p = makeSignatureParams(SIZE, randomBytes(16), { blockSize: BS });
    const img = randomBytes(SIZE);
    const d = dirtied(img, p);
    const cases: [string, (path: string, before: Buffer) => Promise<Parameters<typeof advanceDigestCache>[1]>][] = [
      // The replica is not as the cache's sync left it.
      ['other-before', async () => ({ params: p, before: randomBytes(32), ...d })],
      // An older server: no hashes.
      ['no-hashes', async () => ({ ...d, params: p, before: null, after: null })],
      ['other-seed', async (_, before) => ({ params: { ...p, seed: randomBytes(16) }, before, ...d })],
      ['other-block-size', async (_, before) => ({ params: { ...p, blockSize: 2 * BS }, before, ...d })],
      // A clean block's digest flipped: the list no longer gives the image hash in the header.
      [
        'flipped-digest',
        async (path, before) => {
          const b = await readFile(path);
          b[DIGEST_CACHE_HEADER + 10 * 32]! ^= 1;
          await writeFile(path, b);
          return { params: p, before, ...d };
        },
      ],
      [
        'flipped-header',
        async (path, before) => {
          const b = await readFile(path);
          b[60]! ^= 1;
          await writeFile(path, b);
          return { params: p, before, ...d };
        },
      ],
      [
        'truncated',
        async (path, before) => {
          await truncate(path, DIGEST_CACHE_HEADER + 32);
          return { params: p, before, ...d };
        },
      ],
    ];
    for (const [name, make] of cases) {
      const path = join(dir, name);
      const before = await seed(path, img, p);
      expect(await advanceDigestCache(path, await make(path, before)), name).toBe(false);
      await expect(stat(path), name).rejects.toMatchObject({ code: 'ENOENT' });
    }
    expect(await advanceDigestCache(join(dir, 'none'), { params: p, before: randomBytes(32), ...d })).toBe(false);
  });

  test('a writer that is given blocks out of order or too few writes nothing', async () => {
    const p = makeSignatureParams(SIZE, randomBytes(16), { blockSize: BS });
    const d = digestsOf(randomBytes(SIZE), p);
    const w = await DigestCacheWriter.start(join(dir, 'gap'));
    w!.add(0, d.subarray(0, 32));
    w!.add(2, d.subarray(64, 96));
    expect(await w!.finish(p, randomBytes(32))).toBe(false);
    const w2 = await DigestCacheWriter.start(join(dir, 'short'));
    w2!.add(0, d.subarray(0, 32));
    expect(await w2!.finish(p, randomBytes(32))).toBe(false);
    const names = await readdir(dir);
    expect(names.filter((f) => f.startsWith('gap') || f.startsWith('short'))).toEqual([]);
  });
});
