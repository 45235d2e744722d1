/**
 * The receiver's region hashes for an image of more regions than one
 * RegionSums message carries: they are gathered in one buffer that is filled
 * again for the next message, so each message must be taken (encoded) when it
 * is sent, as Connection.send does, and still say the right thing.
 */
import { afterAll, beforeAll, expect, test } from 'vitest';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sendSignature, regionBlocksFor } from '../../src/net/receiver.js';
import { openImage } from '../../src/io/image.js';
import { regionHash } from '../../src/core/imagehash.js';
import { FULL_DIGEST_LEN } from '../../src/core/strong.js';
import type { DigestBytes } from '../../src/core/digests.js';
import { decodeMessage, encodeMessage } from '../../protocol/codec.js';
import { MsgType, REGION_CHUNK, REGION_HASH_LEN } from '../../protocol/constants.js';
import type { Connection } from '../../src/net/connection.js';
import type { Message } from '../../protocol/messages.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'resync-regions-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

test('region hashes spread over several RegionSums messages each match their regions', async () => {
  const BS = 64 * 1024;
  const R = regionBlocksFor(BS);
  // A sparse image of REGION_CHUNK + 100 regions, data in a few of them (each region then hashes differently).
  const regions = REGION_CHUNK + 100;
  const path = join(dir, 'sparse.img');
  const fh = await open(path, 'w');
  await fh.truncate(regions * R * BS);
  for (const r of [0, 5, REGION_CHUNK - 1, REGION_CHUNK, regions - 1]) await fh.write(Buffer.alloc(BS, r & 255 || 1), 0, BS, r * R * BS + 7 * BS);
  await fh.close();
  const sent: Message[] = [];
  const conn = {
    // As the real connection: the message is encoded before send returns.
    send: async (m: Message) => void sent.push(decodeMessage(encodeMessage(m))),
    expect: async () => ({ type: MsgType.NeedRegions, bitmap: Buffer.alloc(Math.ceil(regions / 8)) }),
  } as unknown as Connection;
  const img = await openImage(path);
  let full: DigestBytes;
  try {
    full = (await sendSignature(conn, img, BS, undefined, { twoLevel: true })).fullDigests;
  } finally {
    await img.fh.close();
  }
  const sums = sent.filter((m) => m.type === MsgType.RegionSums);
  expect(sums.length).toBe(2);
  const got = Buffer.concat(sums.map((m) => (m.type === MsgType.RegionSums ? m.hashes : Buffer.alloc(0))));
  expect(sums.map((m) => (m.type === MsgType.RegionSums ? m.first : -1))).toEqual([0, REGION_CHUNK]);
  expect(got.length).toBe(regions * REGION_HASH_LEN);
  for (const r of [0, 1, 5, 6, REGION_CHUNK - 1, REGION_CHUNK, REGION_CHUNK + 1, regions - 1]) {
    const want = regionHash(full.subarray(r * R * FULL_DIGEST_LEN, (r + 1) * R * FULL_DIGEST_LEN));
    expect(got.subarray(r * REGION_HASH_LEN, (r + 1) * REGION_HASH_LEN).equals(want)).toBe(true);
  }
  // A region with data differs from the hole beside it, in both messages.
  expect(got.subarray(REGION_CHUNK * REGION_HASH_LEN, (REGION_CHUNK + 1) * REGION_HASH_LEN).equals(got.subarray((REGION_CHUNK + 1) * REGION_HASH_LEN, (REGION_CHUNK + 2) * REGION_HASH_LEN))).toBe(false);
});
