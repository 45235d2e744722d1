/**
 * The receiver's signature cache (src/io/sigcache.ts), with real files and
 * real TCP on 127.0.0.1: a second session sends its signature from the
 * cache without reading the image, and every way the cache can be stale,
 * damaged or unwanted (the image written behind resync's back with its mtime
 * put back, a corrupt or truncated cache, a session killed part way, a seed
 * asked by the peer) costs a full read, never a wrong image.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { link, mkdtemp, open, readFile, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cliMain } from '../../bench/killpoints.js';
import { generateImage } from '../../src/testing/workload.js';
import { SignatureGenerator, makeSignatureParams } from '../../src/core/signature.js';
import { deltaFile, loadSignatureFile, patchFile, signatureFile } from '../../src/api/files.js';
import { openImage } from '../../src/io/image.js';
import { journalPathFor } from '../../src/io/journal.js';
import { SIG_CACHE_HEADER, loadSigCache, sigCachePathFor, sigCacheStats } from '../../src/io/sigcache.js';
import { connectAuthenticated, pull, push as pushNow, pushSession, type ClientOptions } from '../../src/net/client.js';
import { pushToReplicas as pushToReplicasNow, type Replica } from '../../src/net/fanout.js';
import type { ResyncServer } from '../../src/net/server.js';
import { signatureReads } from '../../src/net/receiver.js';
import type { VolumeConfig } from '../../src/net/config.js';
import { startServer, type TestServer } from '../helpers/server.js';

const MiB = 1024 * 1024;
/** Large enough for a two-level signature (at least four 1 MiB regions). */
const SIZE = 12 * MiB;

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'resync-sigcache-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** `b` with `count` scattered 4 KiB runs rewritten (seeded), like the bench's `scattered`. */
function scatter(b: Buffer, seed: number, count = 20): Buffer {
  const out = Buffer.from(b);
  let x = seed;
  for (let k = 0; k < count; k++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    const at = (x % Math.floor(out.length / 4096)) * 4096;
    out.fill((x >>> 8) & 0xff, at, at + 4096);
  }
  return out;
}

/** In-process servers by port: a push's server writes the volume's cache after its client has the Result. */
const byPort = new Map<number, ResyncServer>();

/** A push that returns once its server's session ended too (its cache written). */
async function push(image: string, o: ClientOptions): Promise<Awaited<ReturnType<typeof pushNow>>> {
  const r = await pushNow(image, o);
  await byPort.get(o.port)?.idle();
  return r;
}

async function pushToReplicas(image: string, reps: Replica[]): Promise<Awaited<ReturnType<typeof pushToReplicasNow>>> {
  const r = await pushToReplicasNow(image, reps);
  for (const rep of reps) await byPort.get(rep.opts.port)?.idle();
  return r;
}

async function withServer<T>(vols: Record<string, VolumeConfig>, fn: (s: TestServer) => Promise<T>): Promise<T> {
  const s = await startServer(vols);
  byPort.set(s.port, s.server);
  try {
    return await fn(s);
  } finally {
    await s.server.close();
    await rm(s.dir, { recursive: true, force: true });
  }
}

/** A volume and a source file, both `v0` (generated from `seed`). */
async function pair(name: string, seed: number, size = SIZE): Promise<{ vol: string; src: string; v0: Buffer }> {
  const vol = join(dir, `${name}-vol.img`);
  const src = join(dir, `${name}-src.img`);
  const v0 = generateImage(size, seed);
  await writeFile(vol, v0);
  await writeFile(src, v0);
  return { vol, src, v0 };
}

const client = (s: TestServer, volume = 'v') => ({ host: '127.0.0.1', port: s.port, secret: s.secret, volume });

/** The cache of `path` is exactly the signature of the image as it is now (weak sums and full digests under the cache's seed). */
async function expectCacheDescribes(path: string, blockSize: number): Promise<void> {
  const img = await openImage(path);
  try {
    const c = await loadSigCache(img, sigCachePathFor(path)!, { blockSize, strongAlg: 'blake3' });
    expect(c, sigCacheStats.lastIgnored).not.toBeNull();
    const gen = new SignatureGenerator(makeSignatureParams(img.size, c!.seed, { blockSize }), { keepFullDigests: true });
    const weak: number[] = [];
    const data = await readFile(path);
    for (const ch of [...gen.push(data), ...gen.end()]) weak.push(...ch.weak);
    expect(Buffer.from(c!.full.subarray(0, c!.full.length)).equals(Buffer.from(gen.fullDigests!.subarray(0, gen.fullDigests!.length)))).toBe(true);
    expect(Array.from(c!.weak)).toEqual(weak);
    // Zero blocks are marked on load, their digests not stored (core/digests.ts).
    let zeros = 0;
    for (let at = 0; at + blockSize <= data.length; at += blockSize) if (data.subarray(at, at + blockSize).every((x) => x === 0)) zeros++;
    expect(c!.full.elidedBlocks).toBe(zeros);
  } finally {
    await img.fh.close();
  }
}

/** Block size the server picks for these sizes (no --block-size): read back from the cache header. */
async function cacheBlockSize(path: string): Promise<number> {
  return (await readFile(sigCachePathFor(path)!)).readUInt32BE(12);
}

describe('push: the second session sends its signature from the cache', () => {
  test('no read of the image for the signature, identical result, and the new cache describes the new image', async () => {
    const vol = join(dir, 'p-vol.img');
    const src = join(dir, 'p-src.img');
    const v0 = generateImage(SIZE, 1);
    await writeFile(vol, v0);
    const s1 = scatter(v0, 11);
    await writeFile(src, s1);
    await withServer({ v: { path: vol, writable: true } }, async (s) => {
      const fresh = sigCacheStats.freshBlocks;
      const readBack = sigCacheStats.readBack;
      await push(src, client(s));
      expect((await readFile(vol)).equals(s1)).toBe(true);
      expect(existsSync(sigCachePathFor(vol)!)).toBe(true);
      // The written blocks' sums came from the session's verification, none was read back.
      expect(sigCacheStats.freshBlocks).toBeGreaterThan(fresh);
      expect(sigCacheStats.readBack).toBe(readBack);
      const bs = await cacheBlockSize(vol);
      await expectCacheDescribes(vol, bs);

      const s2 = scatter(s1, 22);
      await writeFile(src, s2);
      const used = sigCacheStats.used;
      const read = signatureReads.bytes;
      const r = await push(src, client(s));
      expect(sigCacheStats.used).toBe(used + 1);
      expect(signatureReads.bytes).toBe(read);
      expect((await readFile(vol)).equals(s2)).toBe(true);
      // Only the changed blocks travelled: the cached sums matched the rest.
      expect(r.literalBytes).toBeLessThan(SIZE / 8);
      // Blocks written by the second session carry sums hashed afresh; the rest kept theirs.
      await expectCacheDescribes(vol, bs);

      // A third session from the rewritten cache: verified in place from its digests.
      const s3 = scatter(s2, 33);
      await writeFile(src, s3);
      const used3 = sigCacheStats.used;
      await push(src, client(s));
      expect(sigCacheStats.used).toBe(used3 + 1);
      expect(signatureReads.bytes).toBe(read);
      expect((await readFile(vol)).equals(s3)).toBe(true);
    });
  });

  test('back-to-back pushes while the server writes the cache after each Result: each next session waits for the last, none is ERR_BUSY', async () => {
    // 32 MiB rewritten in full: the cache write reads back and hashes all of it, a window the next push falls into.
    const { vol, src } = await pair('b2b', 9, 32 * MiB);
    await withServer({ v: { path: vol, writable: true } }, async (s) => {
      const images = [generateImage(32 * MiB, 91), generateImage(32 * MiB, 92), generateImage(32 * MiB, 93)];
      for (const img of images) {
        await writeFile(src, img);
        // pushNow: no wait for the server's session to end.
        await pushNow(src, client(s));
      }
      await s.server.idle();
      expect((await readFile(vol)).equals(images[2]!)).toBe(true);
      await expectCacheDescribes(vol, await cacheBlockSize(vol));
    });
  });

  test('an image that grows and shrinks: the last block and the new blocks are hashed afresh', async () => {
    const vol = join(dir, 'g-vol.img');
    const src = join(dir, 'g-src.img');
    const v0 = generateImage(SIZE, 2);
    await writeFile(vol, v0);
    await withServer({ v: { path: vol, writable: true } }, async (s) => {
      await writeFile(src, v0);
      await push(src, { ...client(s), blockSize: 8192 });
      // Longer by a part block, then shorter, then shorter by a part block.
      for (const next of [Buffer.concat([v0, v0.subarray(0, 5000)]), v0.subarray(0, SIZE - 3 * MiB), v0.subarray(0, SIZE - 3 * MiB - 777)]) {
        await writeFile(src, next);
        const used = sigCacheStats.used;
        await push(src, { ...client(s), blockSize: 8192 });
        expect(sigCacheStats.used).toBe(used + 1);
        expect((await readFile(vol)).equals(next)).toBe(true);
        await expectCacheDescribes(vol, 8192);
      }
    });
  });

  test('a small image (one-level signature) is served from the cache too', async () => {
    const vol = join(dir, 'small-vol.img');
    const src = join(dir, 'small-src.img');
    const v0 = generateImage(MiB, 3);
    await writeFile(vol, v0);
    await writeFile(src, scatter(v0, 5, 3));
    await withServer({ v: { path: vol, writable: true } }, async (s) => {
      await push(src, client(s));
      const s2 = scatter(v0, 6, 3);
      await writeFile(src, s2);
      const used = sigCacheStats.used;
      const read = signatureReads.bytes;
      await push(src, client(s));
      expect(sigCacheStats.used).toBe(used + 1);
      expect(signatureReads.bytes).toBe(read);
      expect((await readFile(vol)).equals(s2)).toBe(true);
    });
  });
});

describe('push to several replicas', () => {
  test('the replicas\' caches serve the next push to all of them: the first replica answers under its cache\'s seed, the others are offered it; one hash pass', async () => {
    const { vol: a, src, v0 } = await pair('fan-a', 7);
    const b = join(dir, 'fan-b-vol.img');
    await writeFile(b, v0);
    await withServer({ a: { path: a, writable: true }, b: { path: b, writable: true } }, async (s) => {
      const reps = ['a', 'b'].map((v) => ({ remote: `127.0.0.1:${s.port}/${v}`, opts: client(s, v) }));
      const s1 = scatter(v0, 71);
      await writeFile(src, s1);
      const first = await pushToReplicas(src, reps);
      for (const o of first.replicas) expect(o.ok).toBe(true);
      for (const f of [a, b]) expect(existsSync(sigCachePathFor(f)!), f).toBe(true);

      const s2 = scatter(s1, 72);
      await writeFile(src, s2);
      const used = sigCacheStats.used;
      const read = signatureReads.bytes;
      const second = await pushToReplicas(src, reps);
      for (const o of second.replicas) expect(o.ok).toBe(true);
      expect(sigCacheStats.used, sigCacheStats.lastIgnored).toBe(used + 2);
      expect(signatureReads.bytes).toBe(read);
      expect(second.hashPasses).toBe(1);
      for (const f of [a, b]) expect((await readFile(f)).equals(s2), f).toBe(true);
    });
  });
});

describe('a cache that no longer describes the image is not used', () => {
  test('a byte written behind resync\'s back, mtime put back to the nanosecond: ctime differs, full read, correct result', async () => {
    const { vol, src, v0 } = await pair('b', 4);
    await withServer({ v: { path: vol, writable: true } }, async (s) => {
      await push(src, client(s));
      expect(existsSync(sigCachePathFor(vol)!)).toBe(true);
      const before = await stat(vol, { bigint: true });
      // Change one byte of a block the source still has, then restore mtime exactly.
      const fh = await open(vol, 'r+');
      await fh.write(Buffer.from([v0[5 * MiB + 17]! ^ 0xff]), 0, 1, 5 * MiB + 17);
      await fh.close();
      const sec = before.mtimeNs / 1_000_000_000n;
      const nsec = (before.mtimeNs % 1_000_000_000n).toString().padStart(9, '0');
      expect(spawnSync('touch', ['-m', '-d', `@${sec}.${nsec}`, vol]).status).toBe(0);
      const after = await stat(vol, { bigint: true });
      expect(after.mtimeNs).toBe(before.mtimeNs);
      expect(after.size).toBe(before.size);
      expect(after.ctimeNs).not.toBe(before.ctimeNs);

      const used = sigCacheStats.used;
      const read = signatureReads.bytes;
      await push(src, client(s));
      expect(sigCacheStats.used).toBe(used);
      expect(sigCacheStats.lastIgnored).toMatch(/changed since/);
      expect(signatureReads.bytes - read).toBe(SIZE);
      expect((await readFile(vol)).equals(v0)).toBe(true);
    });
  });

  for (const [what, damage, why] of [
    ['a flipped digest byte', async (p: string) => {
      const fh = await open(p, 'r+');
      const b = Buffer.alloc(1);
      await fh.read(b, 0, 1, SIG_CACHE_HEADER + 100 * 36 + 10);
      b[0] = b[0]! ^ 0x40;
      await fh.write(b, 0, 1, SIG_CACHE_HEADER + 100 * 36 + 10);
      await fh.close();
    }, /checksum/],
    ['a truncated file', async (p: string) => truncate(p, (await stat(p)).size - 50), /bytes/],
    ['garbage', async (p: string) => writeFile(p, Buffer.alloc(4096, 0x5a)), /bytes|version/],
  ] as const) {
    test(`a cache with ${what} is ignored, and the push is correct`, async () => {
      const vol = join(dir, `c-${what.replace(/ /g, '-')}.img`);
      const src = join(dir, `c-src-${what.replace(/ /g, '-')}.img`);
      const v0 = generateImage(SIZE, 5);
      await writeFile(vol, v0);
      await writeFile(src, v0);
      await withServer({ v: { path: vol, writable: true } }, async (s) => {
        await push(src, client(s));
        const p = sigCachePathFor(vol)!;
        // Keep the image's times: only the cache is damaged.
        await damage(p);
        const s2 = scatter(v0, 7);
        await writeFile(src, s2);
        const used = sigCacheStats.used;
        const read = signatureReads.bytes;
        await push(src, client(s));
        expect(sigCacheStats.used).toBe(used);
        expect(sigCacheStats.lastIgnored).toMatch(why);
        expect(signatureReads.bytes - read).toBe(SIZE);
        expect((await readFile(vol)).equals(s2)).toBe(true);
        // And a good cache is back for the next session.
        await expectCacheDescribes(vol, await cacheBlockSize(vol));
      });
    });
  }

  /** Edit a cache's header and seal it again with a good checksum: only the rule under test can refuse it. */
  async function reseal(p: string, edit: (head: Buffer) => void): Promise<void> {
    const b = await readFile(p);
    edit(b);
    createHash('sha256').update(b.subarray(0, b.length - 32)).digest().copy(b, b.length - 32);
    await writeFile(p, b);
  }

  /** Push once, `tamper` with the volume and its cache, push again: the cache must be refused for `why`, and the volume right. */
  async function refusedAfter(name: string, seed: number, tamper: (vol: string) => Promise<void>, why: RegExp): Promise<void> {
    const { vol, src, v0 } = await pair(name, seed);
    await withServer({ v: { path: vol, writable: true } }, async (s) => {
      await push(src, client(s));
      await tamper(vol);
      const used = sigCacheStats.used;
      await push(src, client(s));
      expect(sigCacheStats.used).toBe(used);
      expect(sigCacheStats.lastIgnored).toMatch(why);
      expect((await readFile(vol)).equals(v0)).toBe(true);
    });
  }

  test('racy: a cache stamped in the tick of the image\'s last change is not used', async () => {
    await refusedAfter('r', 19, async (vol) => {
      const st = await stat(vol, { bigint: true });
      await reseal(sigCachePathFor(vol)!, (h) => h.writeBigInt64BE(st.ctimeNs, 80));
    }, /tick/);
  });

  test('coarse timestamps (no sub-second part): no cache is used', async () => {
    await refusedAfter('co', 20, async (vol) => {
      // As a filesystem with whole-second times would have it: mtime on a second, and the cache made to agree.
      expect(spawnSync('touch', ['-m', '-d', '@1700000000', vol]).status).toBe(0);
      const st = await stat(vol, { bigint: true });
      await reseal(sigCachePathFor(vol)!, (h) => {
        h.writeBigInt64BE(st.mtimeNs, 64);
        h.writeBigInt64BE(st.ctimeNs, 72);
        h.writeBigInt64BE(st.ctimeNs + 1_000_000_000n, 80);
      });
    }, /coarse/);
  });

  test('a seed asked by the peer that differs from the cache\'s: no cache, the asked seed is used', async () => {
    const { vol, src, v0 } = await pair('s', 6);
    await withServer({ v: { path: vol, writable: true } }, async (s) => {
      await push(src, client(s));
      const cacheSeed = (await readFile(sigCachePathFor(vol)!)).subarray(32, 48);
      const s2 = scatter(v0, 8);
      await writeFile(src, s2);
      const img = await openImage(src);
      try {
        // Another seed: refused, and the new cache is under the asked seed.
        const asked = Buffer.alloc(16, 0x33);
        const used = sigCacheStats.used;
        await pushSession(await connectAuthenticated(client(s)), img, client(s), performance.now(), { seed: asked });
        await s.server.idle(); // the server writes the cache after its Result
        expect(sigCacheStats.used).toBe(used);
        expect(sigCacheStats.lastIgnored).toMatch(/seed/);
        expect((await readFile(vol)).equals(s2)).toBe(true);
        expect((await readFile(sigCachePathFor(vol)!)).subarray(32, 48).equals(asked)).toBe(true);
        expect(cacheSeed.equals(asked)).toBe(false);
        // The same seed again: the cache serves it.
        await pushSession(await connectAuthenticated(client(s)), img, client(s), performance.now(), { seed: asked });
        await s.server.idle(); // the server writes the cache after its Result
        expect(sigCacheStats.used).toBe(used + 1);
      } finally {
        await img.fh.close();
      }
    });
  });
});

describe('turned off, or not in place', () => {
  test('"sigCache": false on the volume: no cache is kept and every push reads the image', async () => {
    const vol = join(dir, 'off-vol.img');
    const src = join(dir, 'off-src.img');
    const v0 = generateImage(SIZE, 9);
    await writeFile(vol, v0);
    await writeFile(src, scatter(v0, 1));
    await withServer({ v: { path: vol, writable: true, sigCache: false } }, async (s) => {
      await push(src, client(s));
      expect(existsSync(sigCachePathFor(vol)!)).toBe(false);
      const read = signatureReads.bytes;
      await push(src, client(s));
      expect(signatureReads.bytes - read).toBe(SIZE);
    });
  });

  test('shifted data after a cached signature: the in-place patch moves to a temp file, verified from the cached digests; no cache after', async () => {
    const { vol, src, v0 } = await pair('sh', 29);
    await withServer({ v: { path: vol, writable: true } }, async (s) => {
      await writeFile(src, scatter(v0, 30));
      await push(src, client(s));
      const shifted = Buffer.concat([v0.subarray(0, MiB), Buffer.from('inserted, so the rest moves'), v0.subarray(MiB)]);
      await writeFile(src, shifted);
      const ino = (await stat(vol)).ino;
      const used = sigCacheStats.used;
      await push(src, client(s));
      expect(sigCacheStats.used).toBe(used + 1);
      expect((await stat(vol)).ino).not.toBe(ino);
      expect((await readFile(vol)).equals(shifted)).toBe(true);
      expect(existsSync(sigCachePathFor(vol)!)).toBe(false);
    });
  });

  test('a temp-file session deletes an old cache and keeps none (the image is another file after the rename)', async () => {
    const vol = join(dir, 't-vol.img');
    const src = join(dir, 't-src.img');
    const v0 = generateImage(SIZE, 10);
    await writeFile(vol, v0);
    await writeFile(src, scatter(v0, 2));
    await withServer({ v: { path: vol, writable: true }, t: { path: vol, writable: true, inPlace: false } }, async (s) => {
      await push(src, client(s, 'v'));
      expect(existsSync(sigCachePathFor(vol)!)).toBe(true);
      const s2 = scatter(v0, 3);
      await writeFile(src, s2);
      await push(src, client(s, 't'));
      expect(existsSync(sigCachePathFor(vol)!)).toBe(false);
      expect((await readFile(vol)).equals(s2)).toBe(true);
    });
  });
});

describe('resync signature (file mode)', () => {
  test('takes the sums from a valid cache without reading the image; the signature is exact and a delta from it rebuilds the target', async () => {
    const { vol, src, v0 } = await pair('fm', 31);
    await withServer({ v: { path: vol, writable: true } }, async (s) => {
      await writeFile(src, scatter(v0, 32));
      await push(src, client(s));
    });
    const bs = await cacheBlockSize(vol);
    const cacheSeed = (await readFile(sigCachePathFor(vol)!)).subarray(32, 48);
    const used = sigCacheStats.used;
    const sigPath = join(dir, 'fm.sig');
    await signatureFile(vol, sigPath, { blockSize: bs });
    expect(sigCacheStats.used).toBe(used + 1);
    // The same file a pass over the image makes under that seed: weak sums, strong hashes and the basis hash.
    const { signature, basisHash } = await loadSignatureFile(sigPath);
    expect(Buffer.from(signature.params.seed).equals(cacheSeed)).toBe(true);
    const data = await readFile(vol);
    const gen = new SignatureGenerator(makeSignatureParams(data.length, cacheSeed, { blockSize: bs }));
    const chunks = [...gen.push(data), ...gen.end()];
    const n = signature.blockCount;
    expect(Array.from(signature.weak.subarray(0, n))).toEqual(chunks.flatMap((c) => Array.from(c.weak)));
    expect(Buffer.from(signature.strong.subarray(0, n * 16)).equals(Buffer.concat(chunks.map((c) => c.strong)))).toBe(true);
    expect(Buffer.from(basisHash!).equals(gen.imageHash())).toBe(true);
    const next = scatter(data, 33);
    await writeFile(join(dir, 'fm-next.img'), next);
    await deltaFile(sigPath, join(dir, 'fm-next.img'), join(dir, 'fm.delta'));
    await patchFile(vol, join(dir, 'fm.delta'), join(dir, 'fm-out.img'));
    expect((await readFile(join(dir, 'fm-out.img'))).equals(next)).toBe(true);
    // --no-sig-cache reads the image.
    await signatureFile(vol, sigPath, { blockSize: bs, sigCache: false });
    expect(sigCacheStats.used).toBe(used + 1);
  });
});

describe('where no cache is kept', () => {
  test('an image with a second hard link: no cache is written, and one left from before is not used', async () => {
    const { vol, src, v0 } = await pair('hl', 24);
    await withServer({ v: { path: vol, writable: true } }, async (s) => {
      await writeFile(src, scatter(v0, 25));
      await push(src, client(s));
      expect(existsSync(sigCachePathFor(vol)!)).toBe(true);
      // link() changes ctime too: the refusal must come from the link count, checked first.
      await link(vol, join(dir, 'hl-other-name.img'));
      const s2 = scatter(v0, 26);
      await writeFile(src, s2);
      const used = sigCacheStats.used;
      await push(src, client(s));
      expect(sigCacheStats.used).toBe(used);
      expect(sigCacheStats.lastIgnored).toMatch(/2 links/);
      expect(existsSync(sigCachePathFor(vol)!)).toBe(false);
      expect((await readFile(vol)).equals(s2)).toBe(true);
    });
  });

  test('a temp file left by a killed cache writer is replaced, and the cache written', async () => {
    const { vol, src, v0 } = await pair('lt', 27);
    await writeFile(`${sigCachePathFor(vol)!}.tmp`, Buffer.alloc(1000, 1));
    await withServer({ v: { path: vol, writable: true } }, async (s) => {
      await writeFile(src, scatter(v0, 28));
      await push(src, client(s));
      expect(existsSync(`${sigCachePathFor(vol)!}.tmp`)).toBe(false);
      await expectCacheDescribes(vol, await cacheBlockSize(vol));
    });
  });
});

describe('pull', () => {
  test('the second pull sends its signature from the cache; --no-sig-cache reads the image', async () => {
    const vol = join(dir, 'pl-vol.img');
    const local = join(dir, 'pl-local.img');
    const v0 = generateImage(SIZE, 12);
    await writeFile(local, v0);
    const r1 = scatter(v0, 13);
    await writeFile(vol, r1);
    await withServer({ v: { path: vol, writable: false } }, async (s) => {
      await pull(local, client(s));
      expect((await readFile(local)).equals(r1)).toBe(true);
      const r2 = scatter(r1, 14);
      await writeFile(vol, r2);
      let used = sigCacheStats.used;
      let read = signatureReads.bytes;
      await pull(local, client(s));
      expect(sigCacheStats.used).toBe(used + 1);
      expect(signatureReads.bytes).toBe(read);
      expect((await readFile(local)).equals(r2)).toBe(true);

      used = sigCacheStats.used;
      read = signatureReads.bytes;
      await pull(local, { ...client(s), sigCache: false });
      expect(sigCacheStats.used).toBe(used);
      expect(signatureReads.bytes - read).toBe(SIZE);
    });
  });

  test('a pull killed after its first write to the image leaves no cache; the next pull reads the image and is correct', { timeout: 60_000 }, async () => {
    expect(existsSync(cliMain()), `${cliMain()} is missing: run npx tsc -p tsconfig.json first`).toBe(true);
    const vol = join(dir, 'k-vol.img');
    const local = join(dir, 'k-local.img');
    const v0 = generateImage(SIZE, 15);
    await writeFile(local, v0);
    await writeFile(vol, scatter(v0, 16));
    await withServer({ v: { path: vol, writable: false } }, async (s) => {
      await pull(local, client(s));
      expect(existsSync(sigCachePathFor(local)!)).toBe(true);
      const r2 = scatter(v0, 17, 200);
      await writeFile(vol, r2);
      // A real process, SIGKILLed right after its first write reached the image.
      const code = await new Promise<number | string | null>((res) => {
        const c = spawn(process.execPath, [cliMain(), 'pull', '-q', '--secret-file', s.secretFile, `127.0.0.1:${s.port}/v`, local], {
          env: { ...process.env, RESYNC_KILL_AT: 'inplace-written' },
          stdio: 'ignore',
        });
        c.once('close', (code, signal) => res(signal ?? code));
      });
      expect(code).toBe('SIGKILL');
      expect(existsSync(journalPathFor(local))).toBe(true);
      expect(existsSync(sigCachePathFor(local)!)).toBe(false);

      const used = sigCacheStats.used;
      const read = signatureReads.bytes;
      await pull(local, client(s));
      expect(sigCacheStats.used).toBe(used);
      expect(signatureReads.bytes - read).toBe(SIZE);
      expect((await readFile(local)).equals(r2)).toBe(true);
      await expectCacheDescribes(local, await cacheBlockSize(local));
    });
  });
});

describe('push: a server killed mid-session', () => {
  /** `resync serve` as a child process on 127.0.0.1 with volume v=`vol`, killed at `killAt`. */
  async function serveChild(vol: string, secretFile: string, killAt: string): Promise<{ port: number; exited: Promise<string | number | null> }> {
    const c = spawn(process.execPath, [cliMain(), 'serve', '--listen', '127.0.0.1:0', '--secret-file', secretFile, '--volume', `v=${vol}:rw`], {
      env: { ...process.env, RESYNC_KILL_AT: killAt },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    const exited = new Promise<string | number | null>((res) => c.once('close', (code, signal) => res(signal ?? code)));
    const port = await new Promise<number>((res, rej) => {
      let text = '';
      c.stderr!.on('data', (d: Buffer) => {
        text += d.toString();
        const m = /listening on [^\s]+:(\d+)/.exec(text);
        if (m) res(Number(m[1]));
      });
      void exited.then(() => rej(new Error(`resync serve exited:\n${text}`)));
    });
    return { port, exited };
  }

  /** After a kill: the next push finds no cache, reads the volume for its signature, ends equal to `want`, and leaves an exact cache. */
  async function nextPushReadsVolume(vol: string, src: string, want: Buffer): Promise<void> {
    await withServer({ v: { path: vol, writable: true } }, async (s) => {
      const used = sigCacheStats.used;
      const read = signatureReads.bytes;
      await push(src, client(s));
      expect(sigCacheStats.used).toBe(used);
      expect(signatureReads.bytes - read).toBe(SIZE);
      expect((await readFile(vol)).equals(want)).toBe(true);
      await expectCacheDescribes(vol, await cacheBlockSize(vol));
    });
  }

  test('killed while writing the cache after its Result: the push succeeded, no cache is in place, the next push reads the volume and is correct', { timeout: 60_000 }, async () => {
    const { vol, src, v0 } = await pair('kc', 31);
    const s1 = scatter(v0, 32, 100);
    await writeFile(src, s1);
    const secretFile = join(dir, 'kc-secret');
    const secret = Buffer.from('a-secret-of-at-least-16-bytes');
    await writeFile(secretFile, secret, { mode: 0o600 });
    const child = await serveChild(vol, secretFile, 'sigcache-written');
    // The client has its verified Result before the server starts on the cache.
    const r = await pushNow(src, { host: '127.0.0.1', port: child.port, secret, volume: 'v' });
    expect(r.literalBytes).toBeGreaterThan(0);
    expect(await child.exited).toBe('SIGKILL');
    expect((await readFile(vol)).equals(s1)).toBe(true);
    expect(existsSync(sigCachePathFor(vol)!)).toBe(false);
    const s2 = scatter(s1, 33);
    await writeFile(src, s2);
    await nextPushReadsVolume(vol, src, s2);
  });

  test('killed after its first write to the volume: no cache is left, the next push reads the volume and completes it', { timeout: 60_000 }, async () => {
    expect(existsSync(cliMain()), `${cliMain()} is missing: run npx tsc -p tsconfig.json first`).toBe(true);
    const { vol, src, v0 } = await pair('kp', 21);
    await withServer({ v: { path: vol, writable: true } }, async (s) => {
      await writeFile(src, scatter(v0, 22));
      await push(src, client(s));
      expect(existsSync(sigCachePathFor(vol)!)).toBe(true);
    });
    const s2 = scatter(v0, 23, 200);
    await writeFile(src, s2);
    const secretFile = join(dir, 'kp-secret');
    const secret = Buffer.from('a-secret-of-at-least-16-bytes');
    await writeFile(secretFile, secret, { mode: 0o600 });
    const child = await serveChild(vol, secretFile, 'inplace-written');
    await expect(push(src, { host: '127.0.0.1', port: child.port, secret, volume: 'v' })).rejects.toThrow();
    expect(await child.exited).toBe('SIGKILL');
    expect(existsSync(journalPathFor(vol))).toBe(true);
    expect(existsSync(sigCachePathFor(vol)!)).toBe(false);
    await nextPushReadsVolume(vol, src, s2);
  });
});
