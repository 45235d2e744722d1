/**
 * Deterministic workload generator for benchmarks and tests.
 *
 * Produces synthetic VM disk images (zero extents, random data, text-like
 * records, repeated structures) and "new" images derived from a basis by one of
 * a few scenarios. Everything is a pure function of (size, scenario, seed): the
 * in-memory and the streaming variants produce byte-identical output.
 *
 * Randomness comes from AES-128-CTR keystreams (keyed by SHA-256 of a label and
 * the seed), which are fast and seekable: any byte of any stream can be
 * produced without generating the bytes before it.
 */
import { createCipheriv, createHash } from 'node:crypto';
import { open } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { join, resolve } from 'node:path';

import type { Scenario } from './scenarios.js';
export { SCENARIOS, type Scenario } from './scenarios.js';

export interface ScenarioStats {
  basisSize: number;
  targetSize: number;
  /** overwrittenBytes + insertedBytes + deletedBytes. */
  changedBytes: number;
  /** Number of edits applied (an overwrite, insertion or deletion each count as one). */
  edits: number;
  /** Basis bytes replaced in place by new bytes (size unchanged). */
  overwrittenBytes: number;
  /** New bytes inserted (including appended bytes). */
  insertedBytes: number;
  /** Basis bytes removed. */
  deletedBytes: number;
}

/**
 * One edit of the basis: at basis offset `pos`, drop `del` basis bytes and emit
 * `ins` new bytes taken from the scenario data stream at offset `data`.
 * Edits of a plan are sorted by `pos` and never overlap.
 */
export interface Edit {
  kind: 'overwrite' | 'insert' | 'delete';
  pos: number;
  del: number;
  ins: number;
  data: number;
}

export interface ScenarioPlan {
  scenario: Scenario;
  seed: number;
  basisSize: number;
  targetSize: number;
  edits: readonly Edit[];
  stats: ScenarioStats;
}

export type ExtentKind = 'zero' | 'random' | 'text' | 'pattern';

export interface Extent {
  start: number;
  length: number;
  kind: ExtentKind;
  /** Repeating unit for 'pattern' extents (starts at `start`). */
  pattern?: Buffer;
}

export interface ImageLayout {
  size: number;
  seed: number;
  extents: readonly Extent[];
}

const KiB = 1024;
const MiB = 1024 * KiB;
const PAGE = 4 * KiB;
/** Largest buffer handled at once by the streaming functions. */
const CHUNK = 4 * MiB;
const MAX_EXTENT = 8 * MiB;
const SCATTER_FRACTION = 0.01;
const REGION_FRACTION = 0.02;
const SHIFT_SPACING = 8 * MiB;
const SHIFT_MIN_EDITS = 3;
const SHIFT_MAX_LEN = 300;
const MIXED_APPEND = 64 * KiB;

// ---------------------------------------------------------------------------
// Keystreams

const ZEROS = Buffer.alloc(256 * KiB);

function checkSeed(seed: number): void {
  if (typeof seed !== 'number' || !Number.isFinite(seed)) throw new RangeError(`seed must be a finite number, got ${String(seed)}`);
}

function checkCount(name: string, n: number): void {
  if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`${name} must be a non-negative safe integer, got ${String(n)}`);
}

function streamKey(label: string, seed: number): Buffer {
  checkSeed(seed);
  return createHash('sha256').update(`resync-workload:${label}:${String(seed)}`).digest().subarray(0, 16);
}

/** Fills `dst` with the keystream of `key` starting at byte `streamOffset`. */
function fillStream(key: Buffer, dst: Uint8Array, streamOffset: number): void {
  if (dst.length === 0) return;
  const block = Math.floor(streamOffset / 16);
  const skip = streamOffset % 16;
  const iv = Buffer.alloc(16);
  iv.writeUInt32BE(Math.floor(block / 2 ** 32), 8);
  iv.writeUInt32BE(block >>> 0, 12);
  const cipher = createCipheriv('aes-128-ctr', key, iv);
  let done = 0;
  if (skip !== 0) {
    const first = cipher.update(ZEROS.subarray(0, 16));
    done = Math.min(16 - skip, dst.length);
    dst.set(first.subarray(skip, skip + done), 0);
  }
  while (done < dst.length) {
    const n = Math.min(ZEROS.length, dst.length - done);
    dst.set(cipher.update(ZEROS.subarray(0, n)), done);
    done += n;
  }
}

/** Deterministic PRNG stream from a seed (AES-128-CTR keystream; seekable via streamOffset). */
export function randomBytes(seed: number, length: number, streamOffset = 0): Buffer {
  checkCount('length', length);
  checkCount('streamOffset', streamOffset);
  const out = Buffer.allocUnsafe(length);
  fillStream(streamKey('random', seed), out, streamOffset);
  return out;
}

/** Decision PRNG drawing from a keystream. */
class Prng {
  private readonly key: Buffer;
  private readonly buf = Buffer.allocUnsafe(PAGE);
  private pos = PAGE;
  private offset = 0;

  constructor(seed: number, label: string) {
    this.key = streamKey(label, seed);
  }

  u32(): number {
    if (this.pos + 4 > this.buf.length) {
      fillStream(this.key, this.buf, this.offset);
      this.offset += this.buf.length;
      this.pos = 0;
    }
    const v = this.buf.readUInt32LE(this.pos);
    this.pos += 4;
    return v;
  }

  /** Uniform in [0, 1) with 53 bits of precision. */
  uniform(): number {
    const hi = this.u32() >>> 5;
    const lo = this.u32() >>> 6;
    return (hi * 67108864 + lo) / 9007199254740992;
  }

  /** Uniform integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.uniform() * n);
  }

  pick<T>(items: readonly T[]): T {
    const v = items[this.int(items.length)];
    if (v === undefined) throw new Error('pick from empty list');
    return v;
  }
}

function mix32(x: number): number {
  x = Math.imul(x ^ (x >>> 16), 0x7feb352d);
  x = Math.imul(x ^ (x >>> 15), 0x846ca68b);
  return (x ^ (x >>> 16)) >>> 0;
}

// ---------------------------------------------------------------------------
// Image layout and content

const WORDS = [
  'request', 'completed', 'failed', 'retry', 'timeout', 'connection', 'closed', 'opened', 'session', 'user',
  'cache', 'miss', 'hit', 'disk', 'write', 'read', 'flush', 'journal', 'commit', 'rollback',
  'started', 'stopped', 'service', 'worker', 'queue', 'backlog', 'latency', 'threshold', 'exceeded', 'ok',
  'kernel', 'module', 'loaded', 'device', 'attached', 'mounted', 'filesystem', 'clean', 'checkpoint', 'snapshot',
  'upload', 'download', 'token', 'expired', 'refresh', 'granted', 'denied', 'policy', 'update', 'available',
];
const HOSTS = ['web-01', 'web-02', 'db-primary', 'db-replica', 'cache-a', 'batch-7', 'edge-3', 'build-11'];
const PROCS = ['sshd', 'nginx', 'postgres', 'systemd', 'cron', 'kernel', 'dockerd', 'app'];
const LEVELS = ['debug', 'info', 'info', 'info', 'warn', 'error'];
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
const NAMES = ['alice', 'bob', 'carol', 'dave', 'erin', 'frank', 'grace', 'heidi', 'ivan', 'judy', 'mallory', 'oscar'];
const CITIES = ['Lisbon', 'Oslo', 'Austin', 'Osaka', 'Nairobi', 'Lima', 'Perth', 'Tallinn'];
const STATUSES = ['pending', 'shipped', 'delivered', 'returned', 'cancelled'];
const KEYS = ['net', 'log', 'db', 'http', 'cache', 'auth', 'storage', 'sched'];
const SUBKEYS = ['timeout', 'level', 'max_conns', 'port', 'path', 'enabled', 'retries', 'interval'];
const DICT_SIZE = 256;

function pad2(n: number): string {
  return n < 10 ? `0${n}` : String(n);
}

function message(rng: Prng): string {
  const n = 3 + rng.int(6);
  const words: string[] = [];
  for (let i = 0; i < n; i++) words.push(rng.pick(WORDS));
  return words.join(' ');
}

/** Builds the per-image dictionary of text records (log lines, JSON, CSV, config). */
function buildTextDictionary(seed: number): Buffer[] {
  const rng = new Prng(seed, 'text-dict');
  const dict: Buffer[] = [];
  for (let i = 0; i < DICT_SIZE; i++) {
    let line: string;
    switch (rng.int(4)) {
      case 0:
        line =
          `${rng.pick(MONTHS)} ${pad2(1 + rng.int(28))} ${pad2(rng.int(24))}:${pad2(rng.int(60))}:${pad2(rng.int(60))} ` +
          `${rng.pick(HOSTS)} ${rng.pick(PROCS)}[${100 + rng.int(30000)}]: ${message(rng)}`;
        break;
      case 1:
        line =
          `{"ts":${1_600_000_000 + rng.int(100_000_000)},"level":"${rng.pick(LEVELS)}","svc":"${rng.pick(PROCS)}",` +
          `"msg":"${message(rng)}","ms":${rng.int(5000)}}`;
        break;
      case 2:
        line = `${rng.int(1_000_000)},${rng.pick(NAMES)},${rng.pick(CITIES)},${rng.pick(STATUSES)},${rng.int(100_000) / 100}`;
        break;
      default:
        line = `${rng.pick(KEYS)}.${rng.pick(SUBKEYS)} = ${rng.int(2) === 0 ? String(rng.int(65536)) : rng.pick(WORDS)}`;
        break;
    }
    dict.push(Buffer.from(line, 'latin1'));
  }
  return dict;
}

const HEX = Buffer.from('0123456789abcdef', 'latin1');

interface ImageContext {
  layout: ImageLayout;
  imageKey: Buffer;
  textSalt: number;
  dict: Buffer[];
  scratch: Buffer;
}

function makeContext(layout: ImageLayout): ImageContext {
  const saltBytes = createHash('sha256').update(`resync-workload:text-salt:${String(layout.seed)}`).digest();
  return {
    layout,
    imageKey: streamKey('image', layout.seed),
    textSalt: saltBytes.readUInt32LE(0),
    dict: buildTextDictionary(layout.seed),
    scratch: Buffer.allocUnsafe(PAGE + 1024),
  };
}

/**
 * Writes the 4 KiB text page number `page` (absolute page index in the image)
 * into ctx.scratch[0, PAGE): lines of "<8 hex counter> <record>\n".
 */
function textPage(ctx: ImageContext, page: number): Buffer {
  const out = ctx.scratch;
  const dict = ctx.dict;
  let s = mix32(ctx.textSalt ^ mix32((page >>> 0) ^ mix32((Math.floor(page / 2 ** 32) + 0x9e3779b9) | 0)));
  let counter = (page * 53) >>> 0;
  let o = 0;
  while (o < PAGE) {
    s = (s + 0x6d2b79f5) | 0;
    let t = Math.imul(s ^ (s >>> 15), 1 | s);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    const u = ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    const rec = dict[Math.floor(u * u * dict.length)] ?? dict[0];
    for (let shift = 28; shift >= 0; shift -= 4) out[o++] = HEX[(counter >>> shift) & 15] ?? 48;
    out[o++] = 0x20;
    if (rec !== undefined) o += rec.copy(out, o);
    out[o++] = 0x0a;
    counter = (counter + 1) >>> 0;
  }
  return out;
}

function makePattern(rng: Prng): Buffer {
  if (rng.int(3) === 0) {
    // Fill byte, as left by formatters and firmware.
    return Buffer.from([rng.pick([0xff, 0xe5, 0xf6, 0xaa, 0x55])]);
  }
  // Repeated fixed-size structure, mostly zeros with some fields set.
  const len = rng.pick([16, 32, 64, 128, 256, 512]);
  const p = Buffer.alloc(len);
  for (let i = 0; i < len; i++) if (rng.int(2) === 0) p[i] = rng.int(256);
  p[0] = 1 + rng.int(255);
  return p;
}

/** Layout of the synthetic image of `size` bytes for `seed` (extents are 4 KiB-aligned). */
export function imageLayout(size: number, seed: number): ImageLayout {
  checkCount('size', size);
  const rng = new Prng(seed, 'layout');
  const maxExtent = Math.min(MAX_EXTENT, Math.max(PAGE, Math.floor(size / 16 / PAGE) * PAGE));
  const maxPages = maxExtent / PAGE;
  const extents: Extent[] = [];
  let pos = 0;
  while (pos < size) {
    // Log-uniform length between one page and maxExtent.
    const pages = Math.min(maxPages, Math.max(1, Math.floor(Math.exp(rng.uniform() * Math.log(maxPages + 1)))));
    const length = Math.min(pages * PAGE, size - pos);
    let kind: ExtentKind;
    if (extents.length === 0) {
      kind = 'random'; // boot sector / partition table area is never empty
    } else {
      const u = rng.uniform();
      kind = u < 0.35 ? 'zero' : u < 0.65 ? 'random' : u < 0.85 ? 'text' : 'pattern';
    }
    const ext: Extent = { start: pos, length, kind };
    if (kind === 'pattern') ext.pattern = makePattern(rng);
    extents.push(ext);
    pos += length;
  }
  return { size, seed, extents };
}

/** Fills `dst` with the bytes of `ext` starting at absolute image offset `abs`. */
function fillExtent(ctx: ImageContext, ext: Extent, dst: Buffer, abs: number): void {
  switch (ext.kind) {
    case 'zero':
      dst.fill(0);
      return;
    case 'random':
      fillStream(ctx.imageKey, dst, abs);
      return;
    case 'pattern': {
      const p = ext.pattern ?? Buffer.from([0xff]);
      const phase = (abs - ext.start) % p.length;
      dst.fill(phase === 0 ? p : Buffer.concat([p.subarray(phase), p.subarray(0, phase)]));
      return;
    }
    case 'text': {
      let done = 0;
      while (done < dst.length) {
        const at = abs + done;
        const page = Math.floor(at / PAGE);
        const inPage = at - page * PAGE;
        const n = Math.min(PAGE - inPage, dst.length - done);
        textPage(ctx, page).copy(dst, done, inPage, inPage + n);
        done += n;
      }
      return;
    }
  }
}

/** Fills `dst` with image bytes starting at image offset `abs`. */
function fillImageRange(ctx: ImageContext, dst: Buffer, abs: number): void {
  const exts = ctx.layout.extents;
  // First extent whose end is beyond abs.
  let lo = 0;
  let hi = exts.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    const e = exts[mid];
    if (e !== undefined && e.start + e.length <= abs) lo = mid + 1;
    else hi = mid;
  }
  let done = 0;
  for (let i = lo; i < exts.length && done < dst.length; i++) {
    const e = exts[i];
    if (e === undefined) break;
    const at = abs + done;
    const n = Math.min(e.start + e.length - at, dst.length - done);
    fillExtent(ctx, e, dst.subarray(done, done + n), at);
    done += n;
  }
  if (done < dst.length) throw new RangeError('range beyond image end');
}

/** Bytes [offset, offset + length) of the synthetic image of `size` bytes for `seed`, without generating the rest. */
export function imageBytes(size: number, seed: number, offset: number, length: number): Buffer {
  checkCount('offset', offset);
  checkCount('length', length);
  if (offset + length > size) throw new RangeError(`range ${offset}+${length} is beyond the image size ${size}`);
  const out = Buffer.allocUnsafe(length);
  fillImageRange(makeContext(imageLayout(size, seed)), out, offset);
  return out;
}

/** In-memory synthetic VM image: zero extents, random regions and compressible regions, deterministic from seed. */
export function generateImage(size: number, seed: number): Buffer {
  const layout = imageLayout(size, seed);
  const out = Buffer.alloc(size);
  const ctx = makeContext(layout);
  for (const e of layout.extents) {
    if (e.kind !== 'zero') fillExtent(ctx, e, out.subarray(e.start, e.start + e.length), e.start);
  }
  return out;
}

// ---------------------------------------------------------------------------
// Scenarios

function conflicts(a: Edit, b: Edit): boolean {
  return a.pos === b.pos || (a.pos < b.pos + b.del && b.pos < a.pos + a.del);
}

/** Sorted set of mutually non-conflicting edits. */
class EditSet {
  readonly list: Edit[] = [];

  /** Index of the first edit with pos >= p. */
  private lowerBound(p: number): number {
    let lo = 0;
    let hi = this.list.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      const e = this.list[mid];
      if (e !== undefined && e.pos < p) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  conflicts(c: Edit): boolean {
    // Accepted edits are disjoint and sorted, so only the neighbours can conflict.
    const i = this.lowerBound(c.pos);
    const next = this.list[i];
    const prev = this.list[i - 1];
    return (next !== undefined && conflicts(c, next)) || (prev !== undefined && conflicts(c, prev));
  }

  tryAdd(c: Edit): boolean {
    if (this.conflicts(c)) return false;
    this.list.splice(this.lowerBound(c.pos), 0, c);
    return true;
  }
}

function overwrite(pos: number, len: number): Edit {
  return { kind: 'overwrite', pos, del: len, ins: len, data: 0 };
}

function scatteredWrites(size: number, seed: number): Edit[] {
  if (size === 0) return [];
  const pages = Math.ceil(size / PAGE);
  const count = Math.max(1, Math.round(pages * SCATTER_FRACTION));
  const rng = new Prng(seed, 'scattered');
  const chosen = new Set<number>();
  while (chosen.size < count) chosen.add(rng.int(pages));
  return [...chosen].sort((a, b) => a - b).map((p) => overwrite(p * PAGE, Math.min(PAGE, size - p * PAGE)));
}

function addShiftEdits(set: EditSet, size: number, seed: number): void {
  const rng = new Prng(seed, 'shifted');
  const count = Math.max(SHIFT_MIN_EDITS, Math.round(size / SHIFT_SPACING));
  for (let i = 0; i < count; i++) {
    for (let attempt = 0; attempt < 16; attempt++) {
      const pos = rng.int(size + 1);
      const wantInsert = rng.int(2) === 0;
      const len = 1 + rng.int(SHIFT_MAX_LEN);
      const delLen = Math.min(len, size - pos);
      const edit: Edit =
        wantInsert || delLen === 0
          ? { kind: 'insert', pos, del: 0, ins: len, data: 0 }
          : { kind: 'delete', pos, del: delLen, ins: 0, data: 0 };
      if (set.tryAdd(edit)) break;
    }
  }
}

/** Decides the edits of `scenario` for a basis of `basisSize` bytes, from the seed only. */
export function planScenario(basisSize: number, scenario: Scenario, seed: number): ScenarioPlan {
  checkCount('basisSize', basisSize);
  checkSeed(seed);
  let edits: Edit[];
  switch (scenario) {
    case 'identical':
      edits = [];
      break;
    case 'different':
      edits = basisSize > 0 ? [overwrite(0, basisSize)] : [];
      break;
    case 'scattered':
      edits = scatteredWrites(basisSize, seed);
      break;
    case 'shifted': {
      const set = new EditSet();
      addShiftEdits(set, basisSize, seed);
      edits = set.list;
      break;
    }
    case 'mixed': {
      const set = new EditSet();
      const regionLen = Math.round(basisSize * REGION_FRACTION);
      if (regionLen > 0) {
        const rng = new Prng(seed, 'region');
        set.tryAdd(overwrite(rng.int(basisSize - regionLen + 1), regionLen));
      }
      set.tryAdd({ kind: 'insert', pos: basisSize, del: 0, ins: MIXED_APPEND, data: 0 });
      addShiftEdits(set, basisSize, seed);
      const survivors = scatteredWrites(basisSize, seed).filter((w) => !set.conflicts(w));
      edits = set.list.concat(survivors).sort((a, b) => a.pos - b.pos);
      break;
    }
    default:
      throw new RangeError(`unknown scenario ${String(scenario)}`);
  }
  let data = 0;
  let overwrittenBytes = 0;
  let insertedBytes = 0;
  let deletedBytes = 0;
  for (const e of edits) {
    e.data = data;
    data += e.ins;
    if (e.kind === 'overwrite') overwrittenBytes += e.ins;
    else {
      insertedBytes += e.ins;
      deletedBytes += e.del;
    }
  }
  const targetSize = basisSize + insertedBytes - deletedBytes;
  return {
    scenario,
    seed,
    basisSize,
    targetSize,
    edits,
    stats: {
      basisSize,
      targetSize,
      changedBytes: overwrittenBytes + insertedBytes + deletedBytes,
      edits: edits.length,
      overwrittenBytes,
      insertedBytes,
      deletedBytes,
    },
  };
}

/** In-memory scenario: returns the "new" image derived from basis. */
export function applyScenario(basis: Uint8Array, scenario: Scenario, seed: number): Buffer {
  const plan = planScenario(basis.length, scenario, seed);
  const key = streamKey('scenario-data', seed);
  const out = Buffer.allocUnsafe(plan.targetSize);
  let o = 0;
  let cur = 0;
  for (const e of plan.edits) {
    out.set(basis.subarray(cur, e.pos), o);
    o += e.pos - cur;
    fillStream(key, out.subarray(o, o + e.ins), e.data);
    o += e.ins;
    cur = e.pos + e.del;
  }
  out.set(basis.subarray(cur), o);
  return out;
}

// ---------------------------------------------------------------------------
// Streaming

function isZero(buf: Buffer, start: number, end: number): boolean {
  return ZEROS.compare(buf, start, end, 0, end - start) === 0;
}

/**
 * Sequential writer that leaves all-zero 4 KiB pages (aligned to file offsets)
 * as holes and sets the final size with ftruncate.
 */
class SparseWriter {
  private readonly buf = Buffer.allocUnsafe(CHUNK);
  private filled = 0;
  /** File offset of buf[0]. */
  private base = 0;

  constructor(private readonly fh: FileHandle) {}

  get position(): number {
    return this.base + this.filled;
  }

  /** Emits `n` bytes produced by `fill(dst, done)` into successive windows of the buffer. */
  async produce(n: number, fill: (dst: Buffer, done: number) => void | Promise<void>): Promise<void> {
    let done = 0;
    while (done < n) {
      const k = Math.min(CHUNK - this.filled, n - done);
      await fill(this.buf.subarray(this.filled, this.filled + k), done);
      this.filled += k;
      done += k;
      if (this.filled === CHUNK) await this.flush();
    }
  }

  /** Leaves `n` zero bytes as a hole. */
  async skip(n: number): Promise<void> {
    await this.flush();
    this.base += n;
  }

  async flush(): Promise<void> {
    const end = this.filled;
    let runStart = -1;
    let i = 0;
    while (i < end) {
      const pageEnd = Math.min(end, i + PAGE - ((this.base + i) % PAGE));
      if (isZero(this.buf, i, pageEnd)) {
        if (runStart >= 0) {
          await this.writeRange(runStart, i);
          runStart = -1;
        }
      } else if (runStart < 0) {
        runStart = i;
      }
      i = pageEnd;
    }
    if (runStart >= 0) await this.writeRange(runStart, end);
    this.base += end;
    this.filled = 0;
  }

  private async writeRange(from: number, to: number): Promise<void> {
    let off = from;
    while (off < to) {
      const { bytesWritten } = await this.fh.write(this.buf, off, to - off, this.base + off);
      off += bytesWritten;
    }
  }

  async finish(): Promise<number> {
    await this.flush();
    await this.fh.truncate(this.base);
    return this.base;
  }
}

async function readFully(fh: FileHandle, dst: Buffer, position: number): Promise<void> {
  let got = 0;
  while (got < dst.length) {
    const { bytesRead } = await fh.read(dst, got, dst.length - got, position + got);
    if (bytesRead === 0) throw new Error(`basis ended early at offset ${position + got} (file changed while reading?)`);
    got += bytesRead;
  }
}

/** Streams the synthetic image to `path` (zero extents left as holes). Same bytes as generateImage. */
export async function writeImage(path: string, size: number, seed: number): Promise<void> {
  const layout = imageLayout(size, seed);
  const ctx = makeContext(layout);
  const fh = await open(path, 'w');
  try {
    const w = new SparseWriter(fh);
    for (const e of layout.extents) {
      if (e.kind === 'zero') await w.skip(e.length);
      else await w.produce(e.length, (dst, done) => fillExtent(ctx, e, dst, e.start + done));
    }
    await w.finish();
  } finally {
    await fh.close();
  }
}

/**
 * Streams the "new" image for `scenario` derived from the file at basisPath into
 * targetPath, in one pass over the basis. Same bytes as applyScenario.
 */
export async function writeScenario(
  basisPath: string,
  targetPath: string,
  scenario: Scenario,
  seed: number,
): Promise<ScenarioStats> {
  if (resolve(basisPath) === resolve(targetPath)) throw new Error('basis and target must be different files');
  const basis = await open(basisPath, 'r');
  try {
    const st = await basis.stat();
    if (!st.isFile()) throw new Error(`basis is not a regular file: ${basisPath}`);
    const plan = planScenario(st.size, scenario, seed);
    const key = streamKey('scenario-data', seed);
    const target = await open(targetPath, 'w');
    try {
      const w = new SparseWriter(target);
      const copy = (from: number, to: number): Promise<void> =>
        w.produce(to - from, (dst, done) => readFully(basis, dst, from + done));
      let cur = 0;
      for (const e of plan.edits) {
        await copy(cur, e.pos);
        await w.produce(e.ins, (dst, done) => fillStream(key, dst, e.data + done));
        cur = e.pos + e.del;
      }
      await copy(cur, plan.basisSize);
      const written = await w.finish();
      if (written !== plan.targetSize) throw new Error(`internal error: wrote ${written} bytes, expected ${plan.targetSize}`);
    } finally {
      await target.close();
    }
    return plan.stats;
  } finally {
    await basis.close();
  }
}

/** Writes `${dir}/basis.img` and `${dir}/target.img`; returns their paths and the scenario stats. */
export async function makePair(
  dir: string,
  scenario: Scenario,
  size: number,
  seed: number,
): Promise<{ basis: string; target: string; stats: ScenarioStats }> {
  const basis = join(dir, 'basis.img');
  const target = join(dir, 'target.img');
  await writeImage(basis, size, seed);
  const stats = await writeScenario(basis, target, scenario, seed);
  return { basis, target, stats };
}
