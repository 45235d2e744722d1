/**
 * A sender whose hash pass is its own lets the received signature take over
 * its sums as storage (sender.ts, `adoptOwn`): the signature must hold the
 * receiver's sums for every block, and `ownAt` the sender's, exactly as
 * when the two are kept apart.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decodeMessage, encodeMessage } from '../../protocol/codec.js';
import type { Message } from '../../protocol/messages.js';
import { signatureOf } from '../../src/core/whole.js';
import { openImage } from '../../src/io/image.js';
import type { Connection } from '../../src/net/connection.js';
import { sendSignature } from '../../src/net/receiver.js';
import { receiveSignatureWithPrepass, type ReceivedSignature } from '../../src/net/sender.js';
import { generateImage } from '../../src/testing/workload.js';

/** Two ends of an in-memory connection; every message is encoded and decoded on the way. */
function pipe(): [Connection, Connection] {
  class End {
    peer!: End;
    queue: Message[] = [];
    waiting: ((m: Message) => void)[] = [];
    async send(m: Message): Promise<void> {
      const d = decodeMessage(encodeMessage(m));
      const w = this.peer.waiting.shift();
      if (w) w(d);
      else this.peer.queue.push(d);
    }
    recv(): Promise<Message> {
      const m = this.queue.shift();
      return m ? Promise.resolve(m) : new Promise((r) => this.waiting.push(r));
    }
    async expect(type: number, what: string): Promise<Message> {
      const m = await this.recv();
      if (m.type !== type) throw new Error(`expected ${what}`);
      return m;
    }
  }
  const a = new End();
  const b = new End();
  a.peer = b;
  b.peer = a;
  return [a as unknown as Connection, b as unknown as Connection];
}

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'resync-adopt-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const BS = 4096;
const MiB = 1 << 20;

/** The signature `basis` sends for itself, as received by the holder of `target`. */
async function exchange(basis: Buffer, target: Buffer, adoptOwn: boolean): Promise<ReceivedSignature> {
  await writeFile(join(dir, 'basis.img'), basis);
  await writeFile(join(dir, 'target.img'), target);
  const bi = await openImage(join(dir, 'basis.img'));
  const ti = await openImage(join(dir, 'target.img'));
  try {
    const [r, s] = pipe();
    const [, rs] = await Promise.all([sendSignature(r, bi, BS, undefined, { twoLevel: true }), receiveSignatureWithPrepass(s, ti, undefined, { adoptOwn })]);
    return rs;
  } finally {
    await bi.fh.close();
    await ti.fh.close();
  }
}

describe('the sender adopting its own sums as the signature storage', () => {
  const basis = generateImage(12 * MiB, 21);
  const target = Buffer.from(basis);
  // Regions 2 and 9 changed (one of them only in its last block), region 5 gets a block moved from region 0.
  target.fill(7, 2 * MiB + 100, 2 * MiB + 9000);
  target.fill(9, 10 * MiB - 10, 10 * MiB);
  basis.copy(target, 5 * MiB + 3 * BS, 0, BS);

  test.each([true, false])('adoptOwn %s: the receiver sums in the signature, the sender sums from ownAt', async (adoptOwn) => {
    const rs = await exchange(basis, target, adoptOwn);
    expect(rs.own === null).toBe(adoptOwn);
    const p = rs.sig.params;
    const theirs = signatureOf(basis, { blockSize: BS, seed: p.seed, strongLen: p.strongLen });
    const ours = signatureOf(target, { blockSize: BS, seed: p.seed, strongLen: p.strongLen });
    expect(rs.sig.isComplete).toBe(true);
    expect(Buffer.from(rs.sig.weak.buffer, rs.sig.weak.byteOffset, rs.sig.weak.byteLength).equals(Buffer.from(theirs.weak.buffer, theirs.weak.byteOffset, theirs.weak.byteLength))).toBe(true);
    expect(Buffer.from(rs.sig.strong).equals(Buffer.from(theirs.strong))).toBe(true);
    const sl = p.strongLen;
    let differ = 0;
    for (let i = 0; i < ours.blockCount; i++) {
      expect(Buffer.from(rs.ownAt(i)).equals(Buffer.from(ours.strong.subarray(i * sl, (i + 1) * sl))), `block ${i}`).toBe(true);
      if (!rs.sig.strongEquals(i, rs.ownAt(i))) differ++;
    }
    expect(differ).toBe(5);
  });
});
