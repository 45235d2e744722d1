/**
 * Sub-block sums: a second, finer look at blocks that changed in place.
 *
 * After the signature, the delta sender knows which of its aligned blocks
 * differ from the receiver's block at the same offset. A block that changed
 * while its neighbour did not is most likely a small write (a 4 KiB page in a
 * 32 KiB block), and so is each block of a short changed run between
 * unchanged ones (core/subsum.ts, subSumWanted). For those the sender asks for sums of the receiver's
 * sub-blocks, a little ahead of its scan, and the matcher sends only the
 * sub-blocks that differ (see DeltaMatcher.useSubSums). A shifted or
 * rewritten region has no such blocks, so it costs nothing.
 *
 * Wire: SubNeed (delta side) asks for the blocks set in a bitmap; SubSums
 * (signature side) answers each SubNeed in order. A SubNeed may only name
 * blocks the receiver has not rewritten yet (at or past its output
 * position), so the sums are always of the original bytes.
 */
import { MAX_SUB_SIZE, MAX_SUBS_PER_BLOCK } from '../core/limits.js';
import { blockCountFor, type SignatureParams } from '../core/signature.js';
import { SUB_SUM_LEN, SubSummer } from '../core/subsum.js';
import { readAt, readExactSync, type ImageHandle } from '../io/image.js';
import { SUB_NEED_MAX_BLOCKS, SUB_NEED_SPAN } from '../../protocol/constants.js';
import { MsgType } from '../../protocol/constants.js';
import type { SubNeedMsg } from '../../protocol/messages.js';
import type { Connection } from './connection.js';
import { bitmapBytes, setBit, testBit } from '../bytes/bitmap.js';
import { ProtocolError } from '../../protocol/errors.js';

/** Capability both peers announce to use sub-block sums. */
export const SUBSUMS_CAP = 'subsums-nh';

/**
 * How far ahead of its scan the sender asks: blocks whose sums take up to
 * SUMS_AHEAD bytes (8192 blocks at 32 KiB blocks and 16-byte sums), asked for
 * and not yet passed, and at most ASK_AHEAD_BYTES of input ahead. Far enough
 * that the answers are in long before they are needed, even while the
 * receiver pauses to make its writes durable. Small enough that the answers
 * in flight never fill the receiver's send buffer (4 MiB), so the receiver
 * never waits to send them while the sender waits to send ops.
 */
export const SUMS_AHEAD = 1024 * 1024;
export const ASK_AHEAD_BYTES = 1024 * 1024 * 1024;

/** The delta sender's side: asks ahead of the scan, keeps the answers until the scan passes them. */
export class SubSumsAhead {
  /** Blocks below this were considered for asking. */
  private nextBlock = 0;
  /** SubNeeds sent and not answered yet, oldest first. */
  private readonly asked: { first: number; blocks: number[] }[] = [];
  private readonly got = new Map<number, Uint8Array>();
  private readonly perBlock: number;
  /** Blocks asked for and not forgotten yet, and the most there may be. */
  private outstanding = 0;
  private readonly most: number;
  /** SubNeeds sent. */
  private requests = 0;

  constructor(
    private readonly conn: Connection,
    private readonly params: SignatureParams,
    readonly subSize: number,
    /** Whether to ask for block i. */
    private readonly wanted: (i: number) => boolean,
    /**
     * Whether the receiver's block i is all zeros (its signature says so):
     * such a block's sums are known without asking, and asking made the
     * receiver read a hole, which the kernel fills with zeroed pages.
     */
    private readonly zero: (i: number) => boolean = () => false,
  ) {
    this.perBlock = (params.blockSize / subSize) * SUB_SUM_LEN;
    this.most = Math.max(1, Math.floor(SUMS_AHEAD / this.perBlock));
  }

  /** Sums of the sub-blocks of a zero block, made on first use. */
  private zeroSums: Uint8Array | null = null;

  /** Sums of block i: if asked for and received, or if the receiver's block is zero and would have been asked for. */
  get(i: number): Uint8Array | undefined {
    const got = this.got.get(i);
    if (got !== undefined || !this.zero(i) || !this.wanted(i)) return got;
    if (!this.zeroSums) {
      const bs = this.params.blockSize;
      this.zeroSums = new Uint8Array(this.perBlock);
      summerFor(this.params.seed, this.subSize).sums(new Uint8Array(bs), 0, bs / this.subSize, this.zeroSums, 0);
    }
    return this.zeroSums;
  }

  /** Ask for more wanted blocks, ahead of the scan standing at block `at`. */
  async ask(at: number): Promise<void> {
    const bs = this.params.blockSize;
    const limit = Math.min(at + Math.ceil(ASK_AHEAD_BYTES / bs), blockCountFor(this.params.imageSize, bs));
    // Ask in batches, once half the room is free, not a few blocks per step of the scan.
    if (this.requests > 0 && this.outstanding > this.most / 2) return;
    while (this.nextBlock < limit && this.outstanding < this.most) {
      const first = this.nextBlock;
      const stop = Math.min(limit, first + SUB_NEED_SPAN);
      const bitmap = new Uint8Array(bitmapBytes(stop - first));
      const blocks: number[] = [];
      let i = first;
      // The first requests are small so that the first answer, which the scan waits for, comes at once.
      const most = Math.min(SUB_NEED_MAX_BLOCKS, 32 * 2 ** this.requests, this.most - this.outstanding);
      for (; i < stop && blocks.length < most; i++) {
        if (!this.wanted(i) || this.zero(i)) continue;
        setBit(bitmap, i - first);
        blocks.push(i);
      }
      this.nextBlock = i;
      if (blocks.length === 0) continue;
      await this.conn.send({ type: MsgType.SubNeed, first, subSize: this.subSize, bitmap: bitmap.subarray(0, bitmapBytes(i - first)) });
      this.asked.push({ first, blocks });
      this.outstanding += blocks.length;
      this.requests++;
    }
  }

  /** Receive answers until every block below `limit` that was asked for has its sums. */
  async until(limit: number): Promise<void> {
    while (this.asked.length > 0 && this.asked[0]!.blocks[0]! < limit) await this.receiveOne();
  }

  /** Receive every outstanding answer (before the delta ends). */
  async drain(): Promise<void> {
    while (this.asked.length > 0) await this.receiveOne();
  }

  /** Drop the sums of blocks below `block` (the scan has passed them): memory stays bounded. */
  forget(block: number): void {
    for (const k of this.got.keys()) {
      if (k >= block) break;
      this.got.delete(k);
      this.outstanding--;
    }
  }

  private async receiveOne(): Promise<void> {
    const req = this.asked.shift()!;
    const m = await this.conn.expect(MsgType.SubSums, 'sub-block sums');
    if (m.first !== req.first || m.sums.length !== req.blocks.length * this.perBlock) {
      throw new ProtocolError(`sub-block sums for block ${m.first} (${m.sums.length} bytes) do not answer the request for block ${req.first} (${req.blocks.length} blocks)`);
    }
    // Keys go in ascending order, which forget() relies on.
    req.blocks.forEach((k, j) => this.got.set(k, m.sums.subarray(j * this.perBlock, (j + 1) * this.perBlock)));
  }
}

/**
 * The receiver's side: the sums of the sub-blocks a SubNeed asks for, read
 * from `basis`. `position` is the receiver's output position: blocks before
 * it may be rewritten already and cannot be asked for.
 */
export function answerSubNeed(basis: ImageHandle, m: SubNeedMsg, sent: SignatureParams | undefined, position: number): Uint8Array {
  const { bs, out, runs, buf, sumRun } = planSubNeed(m, sent, position);
  for (const [j, k, n] of runs) sumRun(readExactSync(basis, k * bs, n * bs, buf), j, n);
  return out;
}

/** answerSubNeed for a basis read over the network (an NBD export), whose reads cannot be synchronous. */
export async function answerSubNeedRemote(basis: ImageHandle, m: SubNeedMsg, sent: SignatureParams | undefined, position: number): Promise<Uint8Array> {
  const { bs, out, runs, buf, sumRun } = planSubNeed(m, sent, position);
  for (const [j, k, n] of runs) sumRun(await readAt(basis, k * bs, n * bs, buf), j, n);
  return out;
}

/** Bytes of neighbouring blocks read at once for a SubNeed. */
const SUB_READ_BYTES = 1024 * 1024;

/** Blocks of `bs` bytes one read of a SubNeed takes at most (one, for blocks past SUB_READ_BYTES). */
function runBlocks(bs: number): number {
  return Math.max(1, Math.floor(SUB_READ_BYTES / bs));
}

/** Runs of consecutive block numbers in ascending `blocks`, at most `max` long: [index in blocks, first block, count]. */
export function* runsOf(blocks: readonly number[], max: number): Generator<[number, number, number]> {
  for (let j = 0; j < blocks.length; ) {
    let n = 1;
    while (n < max && j + n < blocks.length && blocks[j + n] === blocks[j]! + n) n++;
    yield [j, blocks[j]!, n];
    j += n;
  }
}

/**
 * Check a SubNeed against the signature sent and the output position: the
 * blocks asked for, read in runs of neighbouring ones (a changed run is asked
 * for whole: a database's push asked for 2 600 blocks, each a read of its
 * own), into a buffer as long as the longest run; `sumRun` puts the sums of
 * the run's blocks, read into `data`, where they go in `out`.
 */
function planSubNeed(
  m: SubNeedMsg,
  sent: SignatureParams | undefined,
  position: number,
): { bs: number; out: Uint8Array; runs: [number, number, number][]; buf: Buffer; sumRun: (data: Uint8Array, j: number, n: number) => void } {
  if (!sent) throw new ProtocolError('sub-block sums were asked for, but this side sent no signature');
  const bs = sent.blockSize;
  const sub = m.subSize;
  if (bs % sub !== 0 || bs / sub < 2 || bs / sub > MAX_SUBS_PER_BLOCK || sub > MAX_SUB_SIZE) {
    throw new ProtocolError(`sub-block size ${sub} does not split blocks of ${bs} bytes into 2..${MAX_SUBS_PER_BLOCK} of at most ${MAX_SUB_SIZE}`);
  }
  const n = blockCountFor(sent.imageSize, bs);
  const blocks: number[] = [];
  for (let i = 0; i < m.bitmap.length * 8; i++) {
    if (!testBit(m.bitmap, i)) continue;
    const k = m.first + i;
    if ((k + 1) * bs > sent.imageSize || k >= n) throw new ProtocolError(`sub-block sums asked for block ${k}, which is not a whole block of the ${sent.imageSize}-byte basis`);
    if (k * bs < position) throw new ProtocolError(`sub-block sums asked for block ${k}, which the delta already rewrote`);
    blocks.push(k);
  }
  if (blocks.length > SUB_NEED_MAX_BLOCKS) throw new ProtocolError(`sub-block sums asked for ${blocks.length} blocks at once (at most ${SUB_NEED_MAX_BLOCKS})`);
  const summer = summerFor(sent.seed, sub);
  const per = bs / sub;
  const out = new Uint8Array(blocks.length * per * SUB_SUM_LEN);
  const runs = [...runsOf(blocks, runBlocks(bs))];
  const buf = Buffer.allocUnsafe(runs.reduce((most, r) => Math.max(most, r[2]), 0) * bs);
  const sumRun = (data: Uint8Array, j: number, n: number): void => {
    for (let q = 0; q < n; q++) summer.sums(data, q * bs, per, out, (j + q) * per * SUB_SUM_LEN);
  };
  return { bs, out, runs, buf, sumRun };
}

/** The summer of the last SubNeed answered: a session asks with one seed and size throughout. */
let lastSummer: { seed: Uint8Array; summer: SubSummer } | null = null;

function summerFor(seed: Uint8Array, subSize: number): SubSummer {
  const l = lastSummer;
  if (l && l.summer.subSize === subSize && Buffer.from(l.seed).equals(seed)) return l.summer;
  const summer = new SubSummer(seed, subSize);
  lastSummer = { seed: Uint8Array.from(seed), summer };
  return summer;
}
