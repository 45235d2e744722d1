/**
 * Dirty-bitmap pushes verified over the whole image (cap "dirty-image"), with
 * the real qemu tools: a full push from the export seeds the server's
 * signature cache and the primary's digest cache, and a dirty push then
 * reads only the dirty blocks yet reports scope "image"; a replica changed
 * behind resync's back, a digest cache that does not check, and a server
 * without the cap all fall back to scope "dirty", never "image".
 */
import { beforeAll, describe, expect, test } from 'vitest';
import { open, readFile, readdir, rm, stat, utimes } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { push } from '../../src/api/net.js';
import { SERVER_CAPS } from '../../src/net/server.js';
import { DIRTY_IMAGE_CAP } from '../../protocol/constants.js';
import { DIGEST_CACHE_HEADER } from '../../src/io/digestcache.js';
import { loadSigCache } from '../../src/io/sigcache.js';
import { openImage } from '../../src/io/image.js';
import { StrongHasher } from '../../src/core/strong.js';
import type { TestServer } from '../helpers/server.js';
import { runCli } from '../helpers/cli.js';
import { hasQemu, nbdTestBed, qemuImg, qemuIo, sameContent, startNbd } from '../helpers/qemu.js';

const CLI = join(fileURLToPath(new URL('../..', import.meta.url)), 'bin/resync.js');
let dir: string;
let srv: TestServer;
const KiB = 1024;
const BS = 16 * KiB;

const bed = nbdTestBed('resync-dirtyimg-', 'replica.img');
beforeAll(() => {
  ({ dir, srv } = bed);
});

/**
 * A 32 MiB qcow2 primary with data, a bitmap added at the full sync, and
 * that full sync pushed from the export (same socket each time, as a VM's
 * export keeps); returns the image, the socket and the state directory.
 */
async function synced(name: string): Promise<{ q: string; socket: string; stateDir: string; uri: string }> {
  const q = join(dir, `${name}.qcow2`);
  const socket = join(dir, `${name}.sock`);
  const stateDir = join(dir, `${name}-state`);
  await rm(join(dir, 'replica.img'), { force: true });
  await rm(join(dir, 'replica.img.resync-sig'), { force: true });
  qemuImg('create', '-f', 'qcow2', q, '32M');
  qemuIo(q, 'write -P 0x21 0 6M', 'write -P 0x22 20M 2M');
  qemuImg('bitmap', '--add', q, 'b0');
  const nbd = await startNbd(dir, q, { readOnly: true, bitmap: 'b0', socket });
  const full = await push(nbd.uri, { ...client(), stateDir });
  expect(full.verified).toBe(true);
  await nbd.stop();
  // The server writes its cache after the client has its Result.
  await srv.server.idle();
  return { q, socket, stateDir, uri: nbd.uri };
}

const client = () => ({ host: '127.0.0.1', port: srv.port, secret: srv.secret, volume: 'rec', blockSize: BS });

async function dirtyPush(q: string, socket: string, stateDir: string) {
  const nbd = await startNbd(dir, q, { readOnly: true, bitmap: 'b0', socket });
  const r = await push(nbd.uri, { ...client(), dirtyBitmap: 'b0', stateDir });
  await nbd.stop();
  await srv.server.idle();
  return r;
}

/** The replica's signature cache describes it: every digest recomputed from the file under the cache's seed. */
async function cacheDescribesReplica(): Promise<boolean> {
  const img = await openImage(join(dir, 'replica.img'));
  try {
    const c = await loadSigCache(img, join(dir, 'replica.img.resync-sig'), { blockSize: BS, strongAlg: 'blake3' });
    if (!c) return false;
    const data = await readFile(join(dir, 'replica.img'));
    const h = new StrongHasher('blake3', c.seed, 32);
    for (let i = 0; i * BS < data.length; i++) {
      if (!Buffer.from(h.hash(data, i * BS, Math.min(data.length, (i + 1) * BS))).equals(Buffer.from(c.full.subarray(i * 32, i * 32 + 32)))) return false;
    }
    return true;
  } finally {
    await img.fh.close();
  }
}

async function digestFiles(stateDir: string): Promise<string[]> {
  return (await readdir(stateDir).catch(() => [])).filter((f) => f.startsWith('digests-') && !f.endsWith('.tmp'));
}

describe.skipIf(!hasQemu)('dirty pushes verified over the whole image', () => {
  test('after a full push from the export, dirty pushes read only the dirty blocks and verify the whole image, push after push', async () => {
    const { q, socket, stateDir } = await synced('a');
    expect(await digestFiles(stateDir)).toHaveLength(1);
    expect(await cacheDescribesReplica()).toBe(true);

    qemuIo(q, 'write -P 0xab 1M 64k', 'write -P 0xcd 25M 128k');
    const r = await dirtyPush(q, socket, stateDir);
    expect(r.verifiedScope).toBe('image');
    expect(r.dirtyBytes).toBe(192 * KiB);
    expect(r.bytesRead).toBe(192 * KiB);
    expect(sameContent(q, join(dir, 'replica.img'))).toBe(true);
    // The server kept its cache up to date from the blocks it read back.
    expect(await cacheDescribesReplica()).toBe(true);

    // The next incremental (bitmap cleared after the verified push) goes on from both updated caches.
    qemuImg('bitmap', '--clear', q, 'b0');
    qemuIo(q, 'write -P 0x5a 30M 64k');
    const r2 = await dirtyPush(q, socket, stateDir);
    expect(r2.verifiedScope).toBe('image');
    expect(r2.bytesRead).toBe(64 * KiB);
    expect(sameContent(q, join(dir, 'replica.img'))).toBe(true);
    expect(await cacheDescribesReplica()).toBe(true);
  }, 120_000);

  test('a replica changed behind resync between pushes: the server has no valid cache, the push verifies the dirty blocks only', async () => {
    const { q, socket, stateDir } = await synced('b');
    expect(await digestFiles(stateDir)).toHaveLength(1);
    // A clean block of the replica changed, its mtime put back (ctime cannot be).
    const path = join(dir, 'replica.img');
    const st = await stat(path);
    const fh = await open(path, 'r+');
    await fh.write(Buffer.from('changed'), 0, 7, 10 * 1024 * 1024);
    await fh.close();
    await utimes(path, st.atime, st.mtime);
    qemuIo(q, 'write -P 0xab 1M 64k');
    const r = await dirtyPush(q, socket, stateDir);
    expect(r.verified).toBe(true);
    expect(r.verifiedScope).toBe('dirty');
    expect(r.bytesRead).toBe(64 * KiB);
    // The stale digest cache is dropped; the replica is indeed not whole (a full push would mend it).
    expect(await digestFiles(stateDir)).toHaveLength(0);
    expect(sameContent(q, path)).toBe(false);
  }, 120_000);

  test("a digest cache that does not check (a clean block's digest changed) is never taken for a whole-image verdict", async () => {
    const { q, socket, stateDir } = await synced('c');
    const [name] = await digestFiles(stateDir);
    const file = join(stateDir, name!);
    // Block 100 is clean: flip a bit of its digest.
    const fh = await open(file, 'r+');
    const b = Buffer.alloc(1);
    await fh.read(b, 0, 1, DIGEST_CACHE_HEADER + 100 * 32);
    b[0]! ^= 1;
    await fh.write(b, 0, 1, DIGEST_CACHE_HEADER + 100 * 32);
    await fh.close();
    qemuIo(q, 'write -P 0xab 1M 64k');
    const r = await dirtyPush(q, socket, stateDir);
    expect(r.verifiedScope).toBe('dirty');
    expect(r.bytesRead).toBe(64 * KiB);
    expect(await digestFiles(stateDir)).toHaveLength(0);
    expect(sameContent(q, join(dir, 'replica.img'))).toBe(true);
  }, 120_000);

  test('a server that does not offer "dirty-image" still takes the dirty push, verified over the dirty blocks', async () => {
    const { q, socket, stateDir } = await synced('d');
    expect(await digestFiles(stateDir)).toHaveLength(1);
    const at = SERVER_CAPS.indexOf(DIRTY_IMAGE_CAP);
    SERVER_CAPS.splice(at, 1);
    try {
      qemuIo(q, 'write -P 0xab 1M 64k');
      const r = await dirtyPush(q, socket, stateDir);
      expect(r.verified).toBe(true);
      expect(r.verifiedScope).toBe('dirty');
      expect(r.bytesRead).toBe(64 * KiB);
      expect(sameContent(q, join(dir, 'replica.img'))).toBe(true);
    } finally {
      SERVER_CAPS.splice(at, 0, DIRTY_IMAGE_CAP);
    }
  }, 120_000);

  test('through the CLI: --state-dir keeps the digest cache, --no-digest-cache keeps none', async () => {
    const q = join(dir, 'cli.qcow2');
    const socket = join(dir, 'cli.sock');
    const state = join(dir, 'cli-state');
    await rm(join(dir, 'replica.img'), { force: true });
    qemuImg('create', '-f', 'qcow2', q, '16M');
    qemuIo(q, 'write -P 0x31 0 4M');
    qemuImg('bitmap', '--add', q, 'b0');
    const remote = `127.0.0.1:${srv.port}/rec`;
    const cli = async (...args: string[]) => {
      const nbd = await startNbd(dir, q, { readOnly: true, bitmap: 'b0', socket });
      const r = await runCli(CLI, ['push', '--json', '--block-size', String(BS), '--secret-file', srv.secretFile, ...args, nbd.uri, remote]);
      await nbd.stop();
      await srv.server.idle();
      expect(r.code, r.stderr).toBe(0);
      return JSON.parse(r.stdout) as Record<string, unknown>;
    };
    await cli('--state-dir', state);
    expect(await digestFiles(state)).toHaveLength(1);
    qemuIo(q, 'write -P 0x32 8M 64k');
    expect(await cli('--dirty-bitmap', 'b0', '--state-dir', state)).toMatchObject({ ok: true, verifiedScope: 'image', dirtyBytes: 64 * KiB, bytesRead: 64 * KiB });
    // Without the cache, the same push verifies the dirty blocks only (and leaves the cache as it was).
    expect(await cli('--dirty-bitmap', 'b0', '--state-dir', state, '--no-digest-cache')).toMatchObject({ ok: true, verifiedScope: 'dirty' });
    expect(await digestFiles(state)).toHaveLength(1);
    expect(sameContent(q, join(dir, 'replica.img'))).toBe(true);
  }, 120_000);

  test('a dirty push with no digest cache verifies the dirty blocks, keeps none, and leaves the server cache describing the replica', async () => {
    const { q, socket, stateDir } = await synced('e');
    await rm(stateDir, { recursive: true });
    qemuIo(q, 'write -P 0xab 1M 64k');
    const r = await dirtyPush(q, socket, stateDir);
    expect(r.verifiedScope).toBe('dirty');
    expect(await digestFiles(stateDir)).toHaveLength(0);
    expect(sameContent(q, join(dir, 'replica.img'))).toBe(true);
    // The server's cache still describes the replica after the push.
    expect(await cacheDescribesReplica()).toBe(true);
  }, 120_000);
});
