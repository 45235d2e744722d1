/**
 * Sub-block sums over real TCP: small writes into large blocks cost the
 * written pages, not whole blocks, in both directions; the result is exact;
 * a false match is refused by the verification; and the receiver refuses
 * requests it must not answer.
 */
import { afterAll, beforeAll, describe, expect, test, vi } from 'vitest';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { push, pull } from '../../src/net/client.js';
import { answerSubNeed, answerSubNeedRemote, runsOf } from '../../src/net/subsums.js';
import { openImage } from '../../src/io/image.js';
import { makeSignatureParams, subBlockSize } from '../../src/core/signature.js';
import { SUB_SUM_LEN, SubSummer } from '../../src/core/subsum.js';
import { MsgType } from '../../protocol/constants.js';
import { generateImage } from '../../src/testing/workload.js';
import { startServer, type TestServer } from '../helpers/server.js';

let dir: string;
let srv: TestServer;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'resync-subs-'));
  srv = await startServer({ v: { path: join(dir, 'vol.img'), writable: true } });
});
afterAll(async () => {
  await srv.server.close();
  await rm(dir, { recursive: true, force: true });
  await rm(srv.dir, { recursive: true, force: true });
});

const SIZE = 16 << 20;
const BS = 32 * 1024;
const PAGE = 4096;

/** `basis` with `n` random 4 KiB pages rewritten (page-aligned, in distinct blocks); returns the pages' count. */
function smallWrites(basis: Buffer, n: number, seed: number): Buffer {
  const out = Buffer.from(basis);
  let x = seed;
  const rand = (m: number): number => {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    return x % m;
  };
  const used = new Set<number>();
  while (used.size < n) {
    const block = rand(SIZE / BS);
    if (used.has(block)) continue;
    used.add(block);
    randomBytes(PAGE).copy(out, block * BS + rand(BS / PAGE) * PAGE);
  }
  return out;
}

describe('sub-block sums', () => {
  test('the sub-block size: 4 KiB, larger for huge blocks, none for small ones', () => {
    expect(subBlockSize(32 * 1024)).toBe(4096);
    expect(subBlockSize(8192)).toBe(4096);
    expect(subBlockSize(4096)).toBe(0);
    expect(subBlockSize(1 << 20)).toBe(16384);
    expect(subBlockSize(12288)).toBe(4096);
    expect(subBlockSize(6000)).toBe(0);
    // NH keys are as long as a sub-block: at most 64 KiB, so blocks over 4 MiB go without.
    expect(subBlockSize(4 << 20)).toBe(65536);
    expect(subBlockSize(8 << 20)).toBe(0);
  });

  test('a false sub-block match cannot pass: the receiver refuses the image and rolls it back', async () => {
    // Every sum the same (a collision everywhere): the sender copies changed sub-blocks in place.
    const spy = vi.spyOn(SubSummer.prototype, 'sums').mockImplementation((_buf, _start, count, out, at) => {
      out.fill(0, at, at + count * SUB_SUM_LEN);
    });
    try {
      const basis = generateImage(SIZE, 6);
      const target = smallWrites(basis, 10, 7);
      await writeFile(join(dir, 'vol.img'), basis);
      await writeFile(join(dir, 'src.img'), target);
      const err = await push(join(dir, 'src.img'), { host: '127.0.0.1', port: srv.port, secret: srv.secret, volume: 'v', blockSize: BS }).then(
        () => null,
        (e: unknown) => e,
      );
      expect(spy).toHaveBeenCalled();
      expect((err as { code?: string } | null)?.code).toBe('ERR_VERIFY_FAILED');
      expect((await readFile(join(dir, 'vol.img'))).equals(basis)).toBe(true);
    } finally {
      spy.mockRestore();
    }
  });

  test('push: 40 page writes into 32 KiB blocks send about 40 pages', async () => {
    const basis = generateImage(SIZE, 3);
    const target = smallWrites(basis, 40, 5);
    await writeFile(join(dir, 'vol.img'), basis);
    await writeFile(join(dir, 'src.img'), target);
    const r = await push(join(dir, 'src.img'), { host: '127.0.0.1', port: srv.port, secret: srv.secret, volume: 'v', blockSize: BS });
    expect((await readFile(join(dir, 'vol.img'))).equals(target)).toBe(true);
    // Whole blocks would be 40 x 32 KiB; the written pages are 40 x 4 KiB.
    expect(r.literalBytes).toBeLessThanOrEqual(40 * PAGE);
    expect(r.bytesSent).toBeLessThan(40 * PAGE + 64 * 1024);
  });

  test('push: a page written in each of several neighbouring blocks sends those pages, not the blocks between', async () => {
    const basis = generateImage(SIZE, 8);
    const target = Buffer.from(basis);
    // Ten runs of five changed blocks in a row (one page each), every run between blocks in place:
    // the blocks inside a run have no neighbour in place, yet most of their pages are.
    for (let run = 0; run < 10; run++) {
      for (let k = 0; k < 5; k++) randomBytes(PAGE).copy(target, (run * 40 + 3 + k) * BS + ((run + k) % 8) * PAGE);
    }
    await writeFile(join(dir, 'vol.img'), basis);
    await writeFile(join(dir, 'src.img'), target);
    const r = await push(join(dir, 'src.img'), { host: '127.0.0.1', port: srv.port, secret: srv.secret, volume: 'v', blockSize: BS });
    expect((await readFile(join(dir, 'vol.img'))).equals(target)).toBe(true);
    // The 50 pages, where only the runs' ends would give 20 pages and 30 whole blocks.
    expect(r.literalBytes).toBeLessThanOrEqual(50 * PAGE);
  });

  test('push: pages written into zero blocks send those pages, and no sums of the zero blocks are asked for', async () => {
    // Every other 32 KiB block of the basis zero; a page written into 200 of them, their neighbours in place.
    const basis = generateImage(SIZE, 11);
    for (let k = 0; k < SIZE / BS; k += 2) basis.fill(0, k * BS, (k + 1) * BS);
    const target = Buffer.from(basis);
    for (let j = 0; j < 200; j++) randomBytes(PAGE).copy(target, 2 * j * BS + (j % 8) * PAGE);
    await writeFile(join(dir, 'src.img'), basis);
    await writeFile(join(dir, 'vol.img'), basis);
    const same = await push(join(dir, 'src.img'), { host: '127.0.0.1', port: srv.port, secret: srv.secret, volume: 'v', blockSize: BS });
    await writeFile(join(dir, 'src.img'), target);
    await writeFile(join(dir, 'vol.img'), basis);
    const r = await push(join(dir, 'src.img'), { host: '127.0.0.1', port: srv.port, secret: srv.secret, volume: 'v', blockSize: BS });
    expect((await readFile(join(dir, 'vol.img'))).equals(target)).toBe(true);
    expect(r.literalBytes).toBeLessThanOrEqual(200 * PAGE);
    // The sums of a zero block are known from the signature: what the receiver sends beyond what it
    // sends for an unchanged image is the signature of the changed regions (5 KB), where answering
    // for the 200 blocks would add 200 x 8 sums of 16 bytes (25.6 KB) to it.
    expect(r.bytesReceived - same.bytesReceived).toBeLessThan((200 * 8 * 16) / 2);
  });

  test('pull: the server, sending the delta, asks the client for sub-block sums', async () => {
    const basis = generateImage(SIZE, 4);
    const remote = smallWrites(basis, 25, 9);
    await writeFile(join(dir, 'vol.img'), remote);
    await writeFile(join(dir, 'local.img'), basis);
    const r = await pull(join(dir, 'local.img'), { host: '127.0.0.1', port: srv.port, secret: srv.secret, volume: 'v', blockSize: BS });
    expect((await readFile(join(dir, 'local.img'))).equals(remote)).toBe(true);
    expect(r.literalBytes).toBeLessThanOrEqual(25 * PAGE);
    expect(r.bytesReceived).toBeLessThan(25 * PAGE + 64 * 1024);
  });

  test('runs of neighbouring blocks are read together, at most `max` blocks a read', () => {
    expect([...runsOf([], 4)]).toEqual([]);
    expect([...runsOf([3], 4)]).toEqual([[0, 3, 1]]);
    expect([...runsOf([1, 2, 3, 5, 6, 9], 4)]).toEqual([[0, 1, 3], [3, 5, 2], [5, 9, 1]]);
    expect([...runsOf([0, 1, 2, 3, 4, 5, 6], 3)]).toEqual([[0, 0, 3], [3, 3, 3], [6, 6, 1]]);
  });

  test('sums of runs of neighbouring blocks, longer than one read, equal those of each block alone (file and remote reads)', async () => {
    const basis = generateImage(4 << 20, 11);
    const path = join(dir, 'runs.img');
    await writeFile(path, basis);
    const img = await openImage(path);
    try {
      const sent = makeSignatureParams(basis.length, randomBytes(16), { blockSize: BS });
      // Blocks 1-3, 5, then 40 in a row (more than one read of 1 MiB takes), then 100 and 101.
      const asked = [1, 2, 3, 5, ...Array.from({ length: 40 }, (_, i) => 50 + i), 100, 101];
      const bitmap = new Uint8Array(Math.ceil((101 - 1 + 1) / 8));
      for (const k of asked) bitmap[(k - 1) >> 3]! |= 1 << ((k - 1) & 7);
      const need = { type: MsgType.SubNeed, first: 1, subSize: 4096, bitmap } as const;
      const summer = new SubSummer(sent.seed, 4096, true);
      const per = BS / 4096;
      const expected = Buffer.alloc(asked.length * per * SUB_SUM_LEN);
      asked.forEach((k, j) => summer.sums(basis, k * BS, per, expected, j * per * SUB_SUM_LEN));
      expect(Buffer.from(answerSubNeed(img, need, sent, 0)).equals(expected)).toBe(true);
      expect(Buffer.from(await answerSubNeedRemote(img, need, sent, 0)).equals(expected)).toBe(true);
    } finally {
      await img.fh.close();
    }
  });

  test('the receiver answers with the sums of the original sub-blocks, and refuses bad requests', async () => {
    const basis = generateImage(1 << 20, 8);
    const path = join(dir, 'answer.img');
    await writeFile(path, basis);
    const img = await openImage(path);
    try {
      const sent = makeSignatureParams(basis.length, randomBytes(16), { blockSize: BS });
      const need = { type: MsgType.SubNeed, first: 2, subSize: 8192, bitmap: Uint8Array.of(0b101) } as const;
      const sums = answerSubNeed(img, need, sent, 0);
      // Against the plain JS sums (the receiver uses the WebAssembly module).
      const summer = new SubSummer(sent.seed, 8192, true);
      const expected = Buffer.alloc(2 * 4 * SUB_SUM_LEN);
      [2, 4].forEach((k, j) => summer.sums(basis, k * BS, 4, expected, j * 4 * SUB_SUM_LEN));
      expect(Buffer.from(sums).equals(expected)).toBe(true);
      // Blocks already rewritten (before the output position), past the basis, or a size that does not split the block.
      expect(() => answerSubNeed(img, need, sent, 3 * BS)).toThrow(/already rewrote/);
      expect(() => answerSubNeed(img, { ...need, first: 31 }, sent, 0)).toThrow(/not a whole block/);
      expect(() => answerSubNeed(img, { ...need, subSize: 65536 }, sent, 0)).toThrow(/does not split/);
      expect(() => answerSubNeed(img, need, undefined, 0)).toThrow(/no signature/);
    } finally {
      await img.fh.close();
    }
  });
});
