/**
 * Wrong inputs must give a clear, typed error and leave the target exactly as
 * it was (or resumable): a delta made for another basis, a truncated or
 * damaged delta, signatures that do not fit (spliced, concatenated, another
 * block size), a full disk, and a target that is smaller or larger than the
 * basis the delta expects. File patch is checked in both modes (temp file +
 * rename, and --in-place) and push over 127.0.0.1.
 *
 * Every case asserts the error `code` and the target's SHA-256 before and
 * after; none may leave a temp file behind.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { existsSync, writeFileSync } from 'node:fs';
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { generateImage, randomBytes as workloadBytes } from '../../src/testing/workload.js';
import { deltaFile, patchFile, recoverImage, signatureFile } from '../../src/api/files.js';
import { journalPathFor } from '../../src/io/journal.js';
import { lockImage } from '../../src/io/lock.js';
import { JournalError } from '../../src/io/errors.js';
import { pull, push } from '../../src/net/client.js';
import { encodeFrame } from '../../src/bytes/frame.js';
import { createStreamDigest } from '../../src/core/stream-digest.js';
import { fileDigestAlg } from '../../src/format/framed-file.js';
import { decodeMessage, encodeMessage } from '../../protocol/codec.js';
import { MsgType, PREAMBLE_LEN } from '../../protocol/constants.js';
import type { Message } from '../../protocol/messages.js';
import type { SyncError } from '../../src/core/errors.js';
import { startServer, type TestServer } from '../helpers/server.js';
import { FaultProxy } from '../helpers/fault-proxy.js';

const MiB = 1024 * 1024;
const LOCAL = '127.0.0.1';

let dir: string;
let srv: TestServer;

const sha = async (path: string): Promise<string> => createHash('sha256').update(await readFile(path)).digest('hex');
const shaOf = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

async function rejection(p: Promise<unknown>): Promise<SyncError> {
  try {
    await p;
  } catch (e) {
    return e as SyncError;
  }
  throw new Error('expected the operation to fail');
}

/** Temp files (ours are `.NAME.resync-XXXX.tmp`) and journals in `d`. */
async function leftovers(d: string): Promise<string[]> {
  return (await readdir(d)).filter((f) => f.endsWith('.tmp') || f.endsWith('.resync-journal'));
}

/** A basis, a new image, and the signature and delta between them, in `d`. */
interface Case {
  d: string;
  basis: string;
  target: string;
  sig: string;
  delta: string;
  basisSha: string;
  targetSha: string;
}

async function makeCase(name: string, basisBytes: Buffer, targetBytes: Buffer, blockSize?: number): Promise<Case> {
  const d = join(dir, name);
  await mkdir(d, { recursive: true });
  const c: Case = {
    d,
    basis: join(d, 'basis.img'),
    target: join(d, 'new.img'),
    sig: join(d, 'basis.sig'),
    delta: join(d, 'basis.delta'),
    basisSha: shaOf(basisBytes),
    targetSha: shaOf(targetBytes),
  };
  await writeFile(c.basis, basisBytes);
  await writeFile(c.target, targetBytes);
  await signatureFile(c.basis, c.sig, { blockSize });
  await deltaFile(c.sig, c.target, c.delta);
  return c;
}

/** A 2 MiB basis and a new image with moved, inserted and changed data. */
function images(seed: number, size = 2 * MiB): { basis: Buffer; target: Buffer } {
  const basis = generateImage(size, seed);
  const target = Buffer.concat([basis.subarray(size / 2), workloadBytes(seed, 5000), basis.subarray(0, size / 2 - 4096)]);
  target.fill(0x5a, 100_000, 140_000);
  return { basis, target };
}

/** Patch in one of the two modes; the output is the basis itself. */
function patchMode(mode: 'temp' | 'in-place', c: Case, delta = c.delta): Promise<unknown> {
  return patchFile(c.basis, delta, c.basis, mode === 'in-place' ? { inPlace: true } : {});
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'resync-wrong-'));
  srv = await startServer({
    v: { path: join(dir, 'vol.img'), writable: true },
    small: { path: join(dir, 'vol-small.img'), writable: true },
    large: { path: join(dir, 'vol-large.img'), writable: true },
  });
});

afterAll(async () => {
  await srv?.server.close();
  if (dir) await rm(dir, { recursive: true, force: true });
  if (srv) await rm(srv.dir, { recursive: true, force: true });
});

describe('a delta made for another basis', () => {
  // Same size, different content: the size check cannot tell them apart.
  for (const mode of ['temp', 'in-place'] as const) {
    test(`${mode}: refused, the target unchanged`, async () => {
      const a = images(1);
      const c = await makeCase(`other-basis-${mode}`, a.basis, a.target);
      const other = generateImage(a.basis.length, 2);
      await writeFile(c.basis, other);
      const before = await sha(c.basis);
      const err = await rejection(patchMode(mode, c));
      // In place, the delta header's basis hash is checked before the first write;
      // in temp mode the rebuilt image fails verification and is thrown away.
      expect(err.code).toBe('ERR_BASIS_MISMATCH');
      expect(await sha(c.basis)).toBe(before);
      expect(await leftovers(c.d)).toEqual([]);
    });
  }

  test('in-place: refused before any write (no journal, the mtime unchanged)', async () => {
    const a = images(3);
    const c = await makeCase('other-basis-mtime', a.basis, a.target);
    await writeFile(c.basis, generateImage(a.basis.length, 4));
    const st0 = await stat(c.basis);
    await new Promise((r) => setTimeout(r, 20));
    await expect(patchMode('in-place', c)).rejects.toMatchObject({ code: 'ERR_BASIS_MISMATCH' });
    expect((await stat(c.basis)).mtimeMs).toBe(st0.mtimeMs);
    expect(existsSync(journalPathFor(c.basis))).toBe(false);
  });

  /**
   * Push `next` to the volume, holding the client's delta in the proxy until
   * the volume has been rewritten with `second` (same size). The receiver
   * computes the signature itself, so an honest client's delta always fits the
   * basis it saw; here the basis changes under the session.
   */
  async function pushOverChangingVolume(first: Buffer, second: Buffer, next: Buffer): Promise<{ code: string; volume: Buffer }> {
    const vol = join(dir, 'vol.img');
    const src = join(dir, 'swap-src.img');
    await writeFile(src, next);
    const proxy = await FaultProxy.start(srv.port);
    try {
      const opts = { host: LOCAL, port: proxy.port, secret: srv.secret, volume: 'v' };
      // A clean run measures the server's side of the conversation: the
      // signature, then a Result under 200 bytes.
      await writeFile(vol, first);
      await push(src, opts);
      const signatureEnd = proxy.bytes.down - 200;
      await writeFile(vol, first);
      await waitIdle();
      proxy.rules = { up: { stall: { afterOther: signatureEnd, ms: 1500 } } };
      const pending = push(src, opts).then(
        () => 'ok',
        (e: SyncError) => e.code,
      );
      const t0 = Date.now();
      while (proxy.count('stall') === 0 && Date.now() - t0 < 10_000) await new Promise((r) => setTimeout(r, 5));
      expect(proxy.count('stall')).toBe(1);
      writeFileSync(vol, second);
      const code = await pending;
      await waitIdle();
      expect(existsSync(journalPathFor(vol))).toBe(false);
      return { code, volume: await readFile(vol) };
    } finally {
      await proxy.close();
    }
  }

  test('push: the volume is rewritten between the signature and a delta that moves every block: refused, rolled back', async () => {
    const first = generateImage(2 * MiB, 5);
    const second = generateImage(2 * MiB, 6);
    const next = Buffer.concat([first.subarray(64 * 1024), first.subarray(0, 64 * 1024)]);
    const r = await pushOverChangingVolume(first, second, next);
    // The change is noticed before the first write (size/mtime moved), or at verification at the latest.
    expect(['ERR_BASIS_MISMATCH', 'ERR_VERIFY_FAILED']).toContain(r.code);
    expect(shaOf(r.volume)).toBe(shaOf(second));
  });

  // Regression: a copy of whole blocks onto themselves is verified from the
  // digests taken during the signature pass, without reading the blocks again.
  // An image changed between that pass and the delta (another writer, a
  // snapshot restored under the server) was once reported verified. The
  // receiver now compares the image's size and times before the first write
  // and refuses (ERR_BASIS_MISMATCH, nothing written). Here the first
  // 2 MiB - 64 KiB stay in place and the last 64 KiB change.
  test('push: the volume is rewritten between the signature and a delta that keeps most blocks in place: never reported verified', async () => {
    const first = generateImage(2 * MiB, 7);
    const second = generateImage(2 * MiB, 8);
    const next = Buffer.from(first);
    next.fill(0x42, next.length - 64 * 1024);
    const r = await pushOverChangingVolume(first, second, next);
    // Silent corruption would be: reported ok, and the volume is not the source.
    expect(r.code === 'ok' && shaOf(r.volume) !== shaOf(next)).toBe(false);
  });
});

async function waitIdle(): Promise<void> {
  const t0 = Date.now();
  while (srv.server.connections > 0 && Date.now() - t0 < 5000) await new Promise((r) => setTimeout(r, 10));
}

describe('a truncated or damaged delta file', () => {
  let c: Case;
  let full: Buffer;
  beforeAll(async () => {
    const a = images(7);
    c = await makeCase('truncated', a.basis, a.target);
    full = await readFile(c.delta);
  });

  const cuts: [string, (n: number) => number][] = [
    ['inside the preamble', () => 5],
    ['inside the header', () => PREAMBLE_LEN + 6],
    ['in the middle of the ops', (n) => Math.floor(n / 2)],
    ['one byte short', (n) => n - 1],
  ];
  for (const mode of ['temp', 'in-place'] as const) {
    for (const [where, at] of cuts) {
      test(`${mode}: cut ${where} is ERR_UNEXPECTED_EOF, the target unchanged`, async () => {
        const d = join(c.d, `cut-${mode}-${where.replace(/ /g, '-')}.delta`);
        await writeFile(d, full.subarray(0, at(full.length)));
        await copyFile(join(c.d, 'basis.img'), join(c.d, 'work.img'));
        const work: Case = { ...c, basis: join(c.d, 'work.img') };
        const err = await rejection(patchMode(mode, work, d));
        expect(err.code).toBe('ERR_UNEXPECTED_EOF');
        // Said of the file: a copy cut short, not the framing's "needed N byte(s)".
        expect(err.message).toMatch(/^delta file (is truncated|ended)/);
        // in place: the whole delta is read and checked before the first write
        expect(await sha(work.basis)).toBe(c.basisSha);
        expect(await leftovers(c.d)).toEqual([]);
      });
    }
    test(`${mode}: one flipped byte in the ops is refused (the file digest), the target unchanged`, async () => {
      const d = join(c.d, `flip-${mode}.delta`);
      const bad = Buffer.from(full);
      const at = Math.floor(bad.length * 0.6);
      bad[at] = bad[at]! ^ 0x01;
      await writeFile(d, bad);
      await copyFile(c.basis, join(c.d, 'work.img'));
      const work: Case = { ...c, basis: join(c.d, 'work.img') };
      const err = await rejection(patchMode(mode, work, d));
      expect(['ERR_CORRUPT', 'ERR_COPY_OUT_OF_BOUNDS']).toContain(err.code);
      expect(await sha(work.basis)).toBe(c.basisSha);
      expect(await leftovers(c.d)).toEqual([]);
    });
  }
});

/** Split a framed file into its preamble and its frames' payloads. */
function frames(file: Buffer): { preamble: Buffer; payloads: Buffer[] } {
  const payloads: Buffer[] = [];
  let p = PREAMBLE_LEN;
  while (p < file.length) {
    const n = file.readUInt32BE(p);
    payloads.push(file.subarray(p + 4, p + 4 + n));
    p += 4 + n;
  }
  return { preamble: file.subarray(0, PREAMBLE_LEN), payloads };
}

/** Re-encode messages as a framed file with a correct trailing digest (the end message's `digest`). */
function reframe(preamble: Buffer, msgs: Message[]): Buffer {
  // The digest the preamble's format and version call for (SHA-256, or keyed BLAKE3 for delta files from version 2).
  const h = createStreamDigest(fileDigestAlg(preamble.readUInt32BE(0), preamble.readUInt16BE(4)));
  h.update(preamble);
  const parts: Buffer[] = [preamble];
  for (const m of msgs) {
    let msg = m;
    if ((m.type === MsgType.SigEnd || m.type === MsgType.DeltaEnd) && 'digest' in m) msg = { ...m, digest: h.digest() };
    const f = encodeFrame(encodeMessage(msg));
    h.update(f);
    parts.push(f);
  }
  return Buffer.concat(parts);
}

describe('signatures that do not fit', () => {
  let a: { basis: Buffer; target: Buffer };
  let c4: Case;
  let c8: Case;
  beforeAll(async () => {
    a = images(11);
    c4 = await makeCase('sig-4k', a.basis, a.target, 4096);
    c8 = await makeCase('sig-8k', a.basis, a.target, 8192);
  });

  test('the same basis signed at 4 KiB and 8 KiB blocks: each delta rebuilds the new image (both modes)', async () => {
    for (const c of [c4, c8]) {
      for (const mode of ['temp', 'in-place'] as const) {
        await copyFile(join(c.d, 'basis.img'), join(c.d, 'work.img'));
        await patchMode(mode, { ...c, basis: join(c.d, 'work.img') });
        expect(await sha(join(c.d, 'work.img'))).toBe(c.targetSha);
      }
    }
  });

  test('a spliced signature (4 KiB header, 8 KiB block sums) is refused and no delta is written', async () => {
    const s4 = frames(await readFile(c4.sig));
    const s8 = frames(await readFile(c8.sig));
    const out = join(c4.d, 'spliced.delta');
    // byte-level splice: the file digest no longer matches
    const raw = Buffer.concat([s4.preamble, encodeFrame(s4.payloads[0]!), ...s8.payloads.slice(1).map((p) => encodeFrame(p))]);
    await writeFile(join(c4.d, 'spliced.sig'), raw);
    const e1 = await rejection(deltaFile(join(c4.d, 'spliced.sig'), c4.target, out));
    expect(['ERR_CORRUPT', 'ERR_UNEXPECTED_EOF']).toContain(e1.code);
    expect(existsSync(out)).toBe(false);
    // re-encoded with a correct digest: the block counts give it away
    const msgs = [decodeMessage(s4.payloads[0]!), ...s8.payloads.slice(1).map((p) => decodeMessage(p))];
    await writeFile(join(c4.d, 'spliced2.sig'), reframe(s4.preamble, msgs));
    const e2 = await rejection(deltaFile(join(c4.d, 'spliced2.sig'), c4.target, out));
    expect(e2.code).toBe('ERR_CORRUPT');
    expect(existsSync(out)).toBe(false);
    expect(await leftovers(c4.d)).toEqual([]);
  });

  test('two signatures concatenated are refused (ERR_TRAILING_DATA)', async () => {
    const both = Buffer.concat([await readFile(c4.sig), await readFile(c8.sig)]);
    await writeFile(join(c4.d, 'both.sig'), both);
    const err = await rejection(deltaFile(join(c4.d, 'both.sig'), c4.target, join(c4.d, 'both.delta')));
    expect(err.code).toBe('ERR_TRAILING_DATA');
    expect(existsSync(join(c4.d, 'both.delta'))).toBe(false);
  });

  for (const mode of ['temp', 'in-place'] as const) {
    test(`${mode}: a delta re-labelled with another block size is refused, the target unchanged`, async () => {
      const d = frames(await readFile(c4.delta));
      const msgs = d.payloads.map((p) => decodeMessage(p));
      const h = msgs[0]!;
      if (h.type !== MsgType.DeltaHeader) throw new Error('expected a delta header first');
      msgs[0] = { ...h, blockSize: 8192 };
      const relabelled = join(c4.d, `relabelled-${mode}.delta`);
      await writeFile(relabelled, reframe(d.preamble, msgs));
      await copyFile(join(c4.d, 'basis.img'), join(c4.d, 'work.img'));
      const err = await rejection(patchMode(mode, { ...c4, basis: join(c4.d, 'work.img') }, relabelled));
      // The block size defines the image hash, so neither hash can match.
      expect(['ERR_BASIS_MISMATCH', 'ERR_VERIFY_FAILED']).toContain(err.code);
      expect(await sha(join(c4.d, 'work.img'))).toBe(c4.basisSha);
      expect(await leftovers(c4.d)).toEqual([]);
    });
  }

  test('push asking for a block size the receiver cannot use is refused, the volume unchanged', async () => {
    const vol = join(dir, 'vol.img');
    await writeFile(vol, a.basis);
    await writeFile(join(dir, 'bs-src.img'), a.target);
    const err = await rejection(push(join(dir, 'bs-src.img'), { host: LOCAL, port: srv.port, secret: srv.secret, volume: 'v', blockSize: 8 }));
    expect(['ERR_PARAM', 'ERR_CORRUPT']).toContain(err.code);
    // The refused push closed its source and let go of its read lock: a writer of this process gets it.
    await (await lockImage(join(dir, 'bs-src.img'), 'write')).release();
    await waitIdle();
    expect(await sha(vol)).toBe(shaOf(a.basis));
    expect(existsSync(journalPathFor(vol))).toBe(false);
  });
});

describe('a target smaller or larger than the basis the delta expects', () => {
  const sizes = [
    ['larger by one byte', (b: Buffer) => Buffer.concat([b, Buffer.from([0])])],
    ['smaller by one block', (b: Buffer) => b.subarray(0, b.length - 4096)],
  ] as const;

  async function wrongSize(mode: 'temp' | 'in-place', what: string, change: (b: Buffer) => Buffer): Promise<{ err: SyncError; before: string; c: Case }> {
    const a = images(13);
    const c = await makeCase(`size-${mode}-${what.replace(/ /g, '-')}`, a.basis, a.target);
    await writeFile(c.basis, change(a.basis));
    const before = await sha(c.basis);
    const err = await rejection(patchMode(mode, c));
    return { err, before, c };
  }

  for (const mode of ['temp', 'in-place'] as const) {
    for (const [what, change] of sizes) {
      test(`${mode}: ${what} is refused before any write, the target unchanged`, async () => {
        const { err, before, c } = await wrongSize(mode, what, change);
        expect(['ERR_BASIS_MISMATCH', 'ERR_COPY_OUT_OF_BOUNDS']).toContain(err.code);
        expect(await sha(c.basis)).toBe(before);
        expect(await leftovers(c.d)).toEqual([]);
      });
    }
  }

  for (const [mode, what, change] of [
    ['temp', ...sizes[0]],
    ['temp', ...sizes[1]],
    ['in-place', ...sizes[0]],
  ] as const) {
    test(`${mode}: ${what} is reported as ERR_BASIS_MISMATCH`, async () => {
      expect((await wrongSize(mode, `${what}-code`, change)).err.code).toBe('ERR_BASIS_MISMATCH');
    });
  }

  // Regression (fixed: the basis size is checked first) (src/api/files.ts, patchFileInPlace): the delta was prescanned with the
  // copy bounds of min(image size, delta's basis size) before checkBasisSize()
  // runs, so a basis that is too short is reported as ERR_COPY_OUT_OF_BOUNDS
  // (exit code 3, "the delta is malformed") although the delta is fine and the
  // basis is the wrong file; temp mode reports ERR_BASIS_MISMATCH (exit code 4).
  // Nothing is written either way.
  test('in-place: smaller by one block is reported as ERR_BASIS_MISMATCH', async () => {
    expect((await wrongSize('in-place', 'smaller-code', sizes[1][1])).err.code).toBe('ERR_BASIS_MISMATCH');
  });

  for (const [name, size] of [
    ['small', MiB / 2],
    ['large', 3 * MiB],
  ] as const) {
    test(`push and pull: a ${name}er volume is resized to the source exactly`, async () => {
      const src = generateImage(2 * MiB, 17);
      const vol = join(dir, `vol-${name}.img`);
      await writeFile(vol, generateImage(size, 17));
      await writeFile(join(dir, `src-${name}.img`), src);
      const r = await push(join(dir, `src-${name}.img`), { host: LOCAL, port: srv.port, secret: srv.secret, volume: name });
      expect(r.verified).toBe(true);
      expect(await sha(vol)).toBe(shaOf(src));
      const local = join(dir, `local-${name}.img`);
      await writeFile(local, generateImage(5 * MiB - size, 18));
      await pull(local, { host: LOCAL, port: srv.port, secret: srv.secret, volume: name });
      expect(await sha(local)).toBe(shaOf(src));
    });
  }
});

describe('an interrupted in-place patch and the wrong way to continue it', () => {
  let c: Case;
  let other: Case;
  let suspendedSha: string;
  beforeAll(async () => {
    const a = images(19, 4 * MiB);
    c = await makeCase('resume', a.basis, a.target);
    const b = images(23, 4 * MiB);
    other = await makeCase('resume-other', a.basis, b.target);
    // Stop half-way (like an interrupt): the patch suspends and keeps its journal.
    const stopAt = a.target.length / 2;
    const err = await rejection(
      patchFile(c.basis, c.delta, c.basis, {
        inPlace: true,
        onProgress: (p) => {
          if (p.done > stopAt) throw new Error('interrupted');
        },
      }),
    );
    expect(err.message).toContain('interrupted');
    expect(existsSync(journalPathFor(c.basis))).toBe(true);
    suspendedSha = await sha(c.basis);
  });

  test('patching again without --resume is ERR_JOURNAL, the image as it was', async () => {
    const e = await patchFile(c.basis, c.delta, c.basis, { inPlace: true }).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(JournalError);
    expect(e).toMatchObject({ code: 'ERR_JOURNAL' });
    expect(await sha(c.basis)).toBe(suspendedSha);
  });

  test('--resume with another delta is ERR_JOURNAL, the image as it was', async () => {
    await expect(patchFile(c.basis, other.delta, c.basis, { inPlace: true, resume: true })).rejects.toMatchObject({ code: 'ERR_JOURNAL' });
    expect(await sha(c.basis)).toBe(suspendedSha);
  });

  test('--resume with a truncated copy of the right delta is ERR_UNEXPECTED_EOF, the image as it was', async () => {
    const full = await readFile(c.delta);
    await writeFile(join(c.d, 'short.delta'), full.subarray(0, full.length - 10));
    await expect(patchFile(c.basis, join(c.d, 'short.delta'), c.basis, { inPlace: true, resume: true })).rejects.toMatchObject({ code: 'ERR_UNEXPECTED_EOF' });
    expect(await sha(c.basis)).toBe(suspendedSha);
  });

  test('--resume with the right delta finishes from where it stopped', async () => {
    const r = await patchFile(c.basis, c.delta, c.basis, { inPlace: true, resume: true });
    expect('resumedFrom' in r && r.resumedFrom).toBeGreaterThan(0);
    expect(await sha(c.basis)).toBe(c.targetSha);
    expect(existsSync(journalPathFor(c.basis))).toBe(false);
  });
});

// ---- a full disk: a small tmpfs ----

/** Mount a tmpfs of `size` at a new directory; null and a reason when that is not possible here. */
function mountTmpfs(at: string, size: string): string | null {
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', at], { stdio: 'pipe' });
    return null;
  } catch (e) {
    return `cannot mount a tmpfs (${String((e as { stderr?: Buffer }).stderr ?? e).trim().split('\n')[0]}); needs root or CAP_SYS_ADMIN`;
  }
}

/** Size unit of the full-disk cases: the tmpfs is 8 U. */
const U = MiB / 2;

function remount(at: string, size: string): void {
  execFileSync('mount', ['-o', `remount,size=${size}`, at], { stdio: 'pipe' });
}

function unmount(at: string): void {
  try {
    execFileSync('umount', [at], { stdio: 'pipe' });
  } catch {
    execFileSync('umount', ['-l', at], { stdio: 'pipe' });
  }
}

const probeDir = await mkdtemp(join(tmpdir(), 'resync-tmpfs-probe-'));
const noTmpfs = mountTmpfs(probeDir, '1m');
if (noTmpfs === null) unmount(probeDir);
await rm(probeDir, { recursive: true, force: true });

describe.skipIf(noTmpfs !== null)(`a full disk (tmpfs)${noTmpfs ? ` - skipped: ${noTmpfs}` : ''}`, () => {
  let mnt: string;
  let outside: string;
  let n = 0;

  /** A fresh 4 MiB tmpfs per test (sizes below are in units of U = 512 KiB). */
  async function fresh(): Promise<string> {
    if (mnt) unmount(mnt);
    mnt = join(dir, `tmpfs-${++n}`);
    await mkdir(mnt);
    const why = mountTmpfs(mnt, '4m');
    if (why) throw new Error(why);
    return mnt;
  }

  beforeAll(async () => {
    outside = join(dir, 'full-disk');
    await mkdir(outside);
  });
  afterAll(() => {
    if (mnt) unmount(mnt);
  });

  /** Signature and delta (kept outside the tmpfs) turning `basis` into `target`. */
  async function deltaFor(name: string, basis: Buffer, target: Buffer): Promise<string> {
    await writeFile(join(outside, `${name}.basis`), basis);
    await writeFile(join(outside, `${name}.new`), target);
    await signatureFile(join(outside, `${name}.basis`), join(outside, `${name}.sig`));
    await deltaFile(join(outside, `${name}.sig`), join(outside, `${name}.new`), join(outside, `${name}.delta`));
    return join(outside, `${name}.delta`);
  }

  test('temp mode: ERR_NO_SPACE, the basis unchanged, the temp file removed', async () => {
    const m = await fresh();
    const basis = generateImage(3 * U, 29);
    // The output is sparse (the basis's 1.5 U of zero pages are never written), so the new data alone
    // must overflow: 1.5 U of the basis's data + 5 U new, beside the 3 U image, on an 8 U disk.
    const target = Buffer.concat([basis, workloadBytes(29, 5 * U)]);
    const delta = await deltaFor('temp', basis, target);
    await writeFile(join(m, 'img'), basis);
    for (const out of [join(m, 'img'), join(m, 'new.img')]) {
      const err = await rejection(patchFile(join(m, 'img'), delta, out));
      expect(err.code).toBe('ERR_NO_SPACE');
      expect(await sha(join(m, 'img'))).toBe(shaOf(basis));
      expect(existsSync(join(m, 'new.img'))).toBe(false);
      expect(await readdir(m)).toEqual(['img']);
    }
  });

  test('in place, the journal fills the disk: ERR_NO_SPACE, then rollback gives back the original', async () => {
    const m = await fresh();
    // No zeros in the basis: every old byte is journaled as data (zero pages would take a few bytes each).
    const basis = workloadBytes(30, 5 * U);
    const target = workloadBytes(31, 5 * U);
    const delta = await deltaFor('journal-full', basis, target);
    await writeFile(join(m, 'img'), basis);
    const err = await rejection(patchFile(join(m, 'img'), delta, join(m, 'img'), { inPlace: true }));
    expect(err.code).toBe('ERR_NO_SPACE');
    // Journal first, image second: nothing reached the image.
    expect(await sha(join(m, 'img'))).toBe(shaOf(basis));
    expect(await readdir(m)).toEqual(['img', 'img.resync-journal']);
    remount(m, '16m');
    expect(await recoverImage(join(m, 'img'))).toBe('rolled-back');
    expect(await sha(join(m, 'img'))).toBe(shaOf(basis));
    expect(await readdir(m)).toEqual(['img']);
  });

  test('in place, the journal fills the disk after some batches were written: the message gives the output a --resume keeps (the last checkpoint), and --resume finishes', async () => {
    const m = await fresh();
    remount(m, '32m');
    // 16 MiB rewritten in 2 MiB batches after an 8 MiB first one; 12 MiB free holds the undo of a few
    // batches only. No checkpoint is due before 64 MiB, so a resume starts from 0, whatever was written.
    const basis = workloadBytes(32, 32 * U);
    const target = workloadBytes(33, 32 * U);
    const delta = await deltaFor('journal-full-late', basis, target);
    await writeFile(join(m, 'img'), basis);
    await writeFile(join(m, 'filler'), Buffer.alloc(8 * U, 1));
    const err = await rejection(patchFile(join(m, 'img'), delta, join(m, 'img'), { inPlace: true }));
    expect(err.code).toBe('ERR_NO_SPACE');
    expect(err.message).toMatch(/in-place patch stopped: 0 bytes of the new image are kept under its journal; run again with --resume/);
    remount(m, '64m');
    const r = await patchFile(join(m, 'img'), delta, join(m, 'img'), { inPlace: true, resume: true });
    expect('resumedFrom' in r && r.resumedFrom).toBe(0);
    expect(await sha(join(m, 'img'))).toBe(shaOf(target));
  });

  test('in place over a sparse basis (zero pages journaled by length): ERR_NO_SPACE, then rollback gives back the original', async () => {
    const m = await fresh();
    // Half of the basis is zero pages, holes in the file: the journal stays small, and the image's own
    // writes into its holes run out of space first.
    const basis = generateImage(5 * U, 31);
    const target = workloadBytes(31, 5 * U);
    const delta = await deltaFor('holes-full', basis, target);
    await writeFile(join(m, 'img'), basis);
    await writeFile(join(m, 'filler'), Buffer.alloc(U, 1));
    const err = await rejection(patchFile(join(m, 'img'), delta, join(m, 'img'), { inPlace: true }));
    expect(err.code).toBe('ERR_NO_SPACE');
    expect(await readdir(m)).toEqual(['filler', 'img', 'img.resync-journal']);
    remount(m, '16m');
    expect(await recoverImage(join(m, 'img'))).toBe('rolled-back');
    expect(await sha(join(m, 'img'))).toBe(shaOf(basis));
    expect(await readdir(m)).toEqual(['filler', 'img']);
  });

  // Regression (fixed: a failed flush writes no checkpoint) (src/io/inplace.ts, InPlacePatcher.flush and suspend): flush() emptied
  // `pending` before journaling and writing it; when a journal or image write
  // then fails (ENOSPC here), suspend() still records a checkpoint at
  // planner.position, which counts the writes that never happened. --resume
  // trusts that checkpoint, skips the missing range, fails verification and
  // rolls the whole image back (safe, but the progress is lost and the
  // operator is told ERR_VERIFY_FAILED after adding space). Expected: the
  // checkpoint covers only output that reached the image, and --resume
  // finishes the patch.
  test('in place, the image runs out of space while growing: after space is added, --resume finishes', async () => {
    const m = await fresh();
    const basis = generateImage(2 * U, 37);
    const target = Buffer.concat([basis, workloadBytes(37, 5 * U)]);
    const delta = await deltaFor('grow-full', basis, target);
    await writeFile(join(m, 'img'), basis);
    await writeFile(join(m, 'filler'), Buffer.alloc(3 * U, 1));
    const err = await rejection(patchFile(join(m, 'img'), delta, join(m, 'img'), { inPlace: true }));
    expect(err.code).toBe('ERR_NO_SPACE');
    remount(m, '16m');
    await patchFile(join(m, 'img'), delta, join(m, 'img'), { inPlace: true, resume: true });
    expect(await sha(join(m, 'img'))).toBe(shaOf(target));
  });

  test('in place, the image runs out of space while growing: whatever --resume does, the image is the original or the new one', async () => {
    const m = await fresh();
    const basis = generateImage(2 * U, 37);
    const target = Buffer.concat([basis, workloadBytes(37, 5 * U)]);
    const delta = await deltaFor('grow-full-2', basis, target);
    await writeFile(join(m, 'img'), basis);
    await writeFile(join(m, 'filler'), Buffer.alloc(3 * U, 1));
    const err = await rejection(patchFile(join(m, 'img'), delta, join(m, 'img'), { inPlace: true }));
    expect(err.code).toBe('ERR_NO_SPACE');
    remount(m, '16m');
    const code = await patchFile(join(m, 'img'), delta, join(m, 'img'), { inPlace: true, resume: true }).then(
      () => 'ok',
      (e: SyncError) => e.code,
    );
    const h = await sha(join(m, 'img'));
    if (code === 'ok') expect(h).toBe(shaOf(target));
    else {
      expect(code).toBe('ERR_VERIFY_FAILED');
      expect(h).toBe(shaOf(basis));
    }
    expect(existsSync(journalPathFor(join(m, 'img')))).toBe(false);
  });

  test('push to a full volume (in place): ERR_NO_SPACE; after space is added, a push completes', async () => {
    const m = await fresh();
    const s = await startServer({ full: { path: join(m, 'vol.img'), writable: true } });
    try {
      const basis = generateImage(2 * U, 41);
      const src = Buffer.concat([basis.subarray(0, U), workloadBytes(41, 5 * U), basis.subarray(U)]);
      await writeFile(join(m, 'vol.img'), basis);
      await writeFile(join(m, 'filler'), Buffer.alloc(3 * U, 1));
      await writeFile(join(outside, 'push-full.src'), src);
      const opts = { host: LOCAL, port: s.port, secret: s.secret, volume: 'full' };
      const err = await rejection(push(join(outside, 'push-full.src'), opts));
      expect(err.code).toBe('ERR_NO_SPACE');
      await waitFor(() => s.server.connections === 0);
      const h = await sha(join(m, 'vol.img'));
      if (!existsSync(journalPathFor(join(m, 'vol.img')))) expect(h).toBe(shaOf(basis));
      remount(m, '16m');
      const r = await push(join(outside, 'push-full.src'), opts);
      expect(r.verified).toBe(true);
      expect(await sha(join(m, 'vol.img'))).toBe(shaOf(src));
      // The session goes on past the client's Result, writing the volume's signature cache: its temp file is left only if that fails.
      await s.server.idle();
      expect(await leftovers(m)).toEqual([]);
    } finally {
      await s.server.close();
      await rm(s.dir, { recursive: true, force: true });
    }
  });

  test('push to a full volume (temp file + rename): ERR_NO_SPACE, the volume unchanged, no temp file left', async () => {
    const m = await fresh();
    const s = await startServer({ full: { path: join(m, 'vol.img'), writable: true, inPlace: false } });
    try {
      const basis = generateImage(3 * U, 43);
      const src = Buffer.concat([basis, workloadBytes(43, 3 * U)]);
      await writeFile(join(m, 'vol.img'), basis);
      await writeFile(join(outside, 'push-temp.src'), src);
      const err = await rejection(push(join(outside, 'push-temp.src'), { host: LOCAL, port: s.port, secret: s.secret, volume: 'full' }));
      expect(err.code).toBe('ERR_NO_SPACE');
      await waitFor(() => s.server.connections === 0);
      expect(await sha(join(m, 'vol.img'))).toBe(shaOf(basis));
      expect(await readdir(m)).toEqual(['vol.img']);
    } finally {
      await s.server.close();
      await rm(s.dir, { recursive: true, force: true });
    }
  });

  test('pull into a full disk (in place): ERR_NO_SPACE; after space is added, a pull completes', async () => {
    const m = await fresh();
    const basis = generateImage(2 * U, 47);
    const src = Buffer.concat([workloadBytes(47, 4 * U), basis]);
    const srcPath = join(outside, 'pull-full.src');
    await writeFile(srcPath, src);
    const s = await startServer({ src: { path: srcPath, writable: false } });
    try {
      await writeFile(join(m, 'local.img'), basis);
      await writeFile(join(m, 'filler'), Buffer.alloc(3 * U, 1));
      const opts = { host: LOCAL, port: s.port, secret: s.secret, volume: 'src' };
      const err = await rejection(pull(join(m, 'local.img'), opts));
      expect(err.code).toBe('ERR_NO_SPACE');
      remount(m, '16m');
      await pull(join(m, 'local.img'), opts);
      expect(await sha(join(m, 'local.img'))).toBe(shaOf(src));
      expect(await leftovers(m)).toEqual([]);
    } finally {
      await s.server.close();
      await rm(s.dir, { recursive: true, force: true });
    }
  });

  test('standard input spooled to a full $TMPDIR: ERR_NO_SPACE naming TMPDIR, nothing written', async () => {
    const m = await fresh();
    const input = join(outside, 'stdin-big.img');
    await writeFile(input, workloadBytes(48, 10 * U));
    const out = join(outside, 'stdin-big.sig');
    const r = spawnSync(process.execPath, [resolve('bin/resync.js'), 'signature', '-', out], { input: await readFile(input), env: { ...process.env, TMPDIR: m }, encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(6);
    expect(r.stderr).toContain('ERR_NO_SPACE');
    expect(r.stderr).toContain(`set TMPDIR to a file system with room`);
    expect(existsSync(out)).toBe(false);
    // The spool went with the failure.
    expect(await readdir(m)).toEqual([]);
  });

  test('an output for standard output spooled to a full $TMPDIR: ERR_NO_SPACE naming TMPDIR, the spool removed', async () => {
    const m = await fresh();
    const basis = workloadBytes(49, 2 * U);
    const target = workloadBytes(50, 10 * U);
    const delta = await deltaFor('stdout-big', basis, target);
    const r = spawnSync(process.execPath, [resolve('bin/resync.js'), 'patch', join(outside, 'stdout-big.basis'), delta, '-'], { env: { ...process.env, TMPDIR: m }, encoding: 'buffer', maxBuffer: 64 * MiB });
    const stderr = r.stderr.toString();
    expect(r.status, stderr).toBe(6);
    expect(stderr).toContain('ERR_NO_SPACE');
    expect(stderr).toContain('output for standard output is kept in');
    expect(stderr).toContain('set TMPDIR to a file system with room');
    expect(r.stdout.length).toBe(0);
    expect(await readdir(m)).toEqual([]);
  });

  test('standard output itself on a full file system: ERR_NO_SPACE, and no advice about TMPDIR (which had room)', async () => {
    const m = await fresh();
    const basis = workloadBytes(51, 2 * U);
    const target = workloadBytes(52, 10 * U);
    const delta = await deltaFor('stdout-full', basis, target);
    const { openSync, closeSync } = await import('node:fs');
    const fd = openSync(join(m, 'out'), 'w');
    try {
      const r = spawnSync(process.execPath, [resolve('bin/resync.js'), 'patch', join(outside, 'stdout-full.basis'), delta, '-'], { stdio: ['ignore', fd, 'pipe'], encoding: 'utf8' });
      expect(r.status, r.stderr).toBe(6);
      expect(r.stderr).toContain('ERR_NO_SPACE');
      expect(r.stderr).toContain('cannot write standard output');
      expect(r.stderr).not.toContain('TMPDIR');
    } finally {
      closeSync(fd);
    }
  });

  test('a read-only file system: recover of an image without a journal reports nothing to do (it writes nothing)', async () => {
    const m = await fresh();
    const basis = generateImage(U, 43);
    await writeFile(join(m, 'img'), basis);
    execFileSync('mount', ['-o', 'remount,ro', m], { stdio: 'pipe' });
    try {
      expect(await recoverImage(join(m, 'img'))).toBe('nothing');
      expect(await sha(join(m, 'img'))).toBe(shaOf(basis));
    } finally {
      execFileSync('mount', ['-o', 'remount,rw', m], { stdio: 'pipe' });
    }
  });
});

async function waitFor(cond: () => boolean, timeoutMs = 5000): Promise<void> {
  const t0 = Date.now();
  while (!cond() && Date.now() - t0 < timeoutMs) await new Promise((r) => setTimeout(r, 10));
}
