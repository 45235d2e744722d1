/**
 * An in-place patch that finds the delta moving the image gives way to a temp
 * file (src/io/adaptive.ts). Real files; images large enough for the policy's
 * 6 MiB of evidence.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmod, link, lstat, mkdtemp, readdir, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { imageHashBuilder, type ImageHashSpec } from '../../src/core/imagehash.js';
import { preferTempFile } from '../../src/core/patch.js';
import { StrongHasher } from '../../src/core/strong.js';
import { diff, signatureOf } from '../../src/core/whole.js';
import type { DeltaOp } from '../../src/core/ops.js';
import { AdaptivePatch } from '../../src/io/adaptive.js';
import { openImage } from '../../src/io/image.js';
import { InPlacePatcher, recoverLocked, settleJournal } from '../../src/io/inplace.js';
import { journalPathFor, readJournal } from '../../src/io/journal.js';
import { pull, push } from '../../src/net/client.js';
import { startServer } from '../helpers/server.js';
import { FaultProxy } from '../helpers/fault-proxy.js';
import { movedMarkerPath } from '../../src/io/moved-marker.js';
import { cliMain } from '../../bench/killpoints.js';
import { serveChild } from '../helpers/listening.js';
import type { ChildProcess } from 'node:child_process';
import { directSupported } from '../helpers/direct.js';

const MiB = 1024 * 1024;
const BS = 64 * 1024;
const SPEC: ImageHashSpec = { blockSize: BS, strongAlg: 'blake3', seed: new Uint8Array(16).fill(7) };

let dir: string;
let basis: Buffer;
/** 24 bytes inserted at 1 MiB: everything after moves. */
let shifted: Buffer;
/** Three blocks overwritten where they are. */
let scattered: Buffer;
let shiftedOps: DeltaOp[];
let scatteredOps: DeltaOp[];

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'resync-adaptive-'));
  basis = randomBytes(48 * MiB);
  shifted = Buffer.concat([basis.subarray(0, MiB), Buffer.from('twenty-four bytes added!'), basis.subarray(MiB)]);
  scattered = Buffer.from(basis);
  for (const at of [3, 200, 600]) randomBytes(BS).copy(scattered, at * BS);
  const sig = signatureOf(basis, { blockSize: BS });
  shiftedOps = diff(sig, shifted);
  scatteredOps = diff(sig, scattered);
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const imageHash = (b: Uint8Array): Buffer => {
  const h = imageHashBuilder(b.length, SPEC);
  h.update(b);
  return h.digest();
};

/** Full block digests of `b` under SPEC, as a receiver's signature pass keeps them. */
function digestsOf(b: Uint8Array): Uint8Array {
  const h = new StrongHasher(SPEC.strongAlg, SPEC.seed, 16);
  const n = Math.ceil(b.length / BS);
  const out = new Uint8Array(n * 32);
  for (let k = 0; k < n; k++) out.set(h.hash(b, k * BS, Math.min(b.length, (k + 1) * BS)), k * 32);
  return out;
}

interface Run {
  patch: AdaptivePatch;
  inPlace: InPlacePatcher;
  close(): Promise<void>;
}

async function begin(path: string, targetSize: number, opts: { batchBytes?: number; digests?: Uint8Array } = {}): Promise<Run> {
  const img = await openImage(path, 'r+');
  const inPlace = await InPlacePatcher.start(img, journalPathFor(path), { id: 't', targetSize }, SPEC);
  inPlace.useBasisDigests(opts.digests ?? digestsOf(basis));
  if (opts.batchBytes !== undefined) {
    inPlace.batchBytes = opts.batchBytes;
    inPlace.firstBatchBytes = opts.batchBytes;
    inPlace.holdFirstBytes = 2 * opts.batchBytes;
  }
  const patch = new AdaptivePatch(img, inPlace, targetSize, SPEC);
  return { patch, inPlace, close: () => img.fh.close() };
}

async function patchAll(path: string, ops: DeltaOp[], target: Buffer, opts: Parameters<typeof begin>[2] = {}): Promise<AdaptivePatch> {
  const r = await begin(path, target.length, opts);
  try {
    for (const op of ops) await r.patch.apply(op);
    await r.patch.finish(target.length, imageHash(target));
  } finally {
    await r.close();
  }
  return r.patch;
}

const leftovers = async (): Promise<string[]> => (await readdir(dir)).filter((f) => f.endsWith('.tmp') || f.endsWith('.journal') || f.includes('resync-journal'));

describe('the policy (pure)', () => {
  test('moved data switches; blocks changed in place, too little evidence, or too little left do not', () => {
    const G = 1024 * MiB;
    expect(preferTempFile(12 * MiB, 10 * MiB, G)).toBe(true);
    expect(preferTempFile(400 * MiB, 10 * MiB, G)).toBe(false); // 2.5 % rewritten: in place
    expect(preferTempFile(5 * MiB, 5 * MiB, G)).toBe(false); // not enough seen yet
    expect(preferTempFile(900 * MiB, 800 * MiB, G)).toBe(false); // most of the work done
    // Evidence grows with the image: 1/256 of 100 GiB is 400 MiB.
    expect(preferTempFile(300 * MiB, 300 * MiB, 100 * G)).toBe(false);
    expect(preferTempFile(500 * MiB, 400 * MiB, 100 * G)).toBe(true);
  });
});

describe('in place, or a temp file when the data moved', () => {
  test('shifted content moves to a temp file: right bytes, mode kept, no journal or temp file left', async () => {
    const path = join(dir, 'shift.img');
    await writeFile(path, basis);
    await chmod(path, 0o640);
    const inode = (await stat(path)).ino;
    const p = await patchAll(path, shiftedOps, shifted);
    expect(p.state.switchedAt).not.toBeNull();
    expect((await readFile(path)).equals(shifted)).toBe(true);
    // The batch buffers handed to the temp file's writer are aligned: it writes them with direct I/O.
    if (await directSupported(dir)) expect(p.tempBytesDirect).toBeGreaterThan(shifted.length / 2);
    const st = await stat(path);
    expect(st.ino).not.toBe(inode);
    expect(st.mode & 0o777).toBe(0o640);
    expect(await readJournal(journalPathFor(path))).toBeNull();
    expect(await leftovers()).toEqual([]);
  });

  test('data moved from the start is seen before the first batch reaches the image: the switch has nothing to undo', async () => {
    const path = join(dir, 'early.img');
    await writeFile(path, basis);
    const r = await begin(path, shifted.length);
    try {
      for (const op of shiftedOps) {
        await r.patch.apply(op);
        if (r.patch.state.switchedAt !== null) break;
      }
      expect(r.patch.state.switchedAt).not.toBeNull();
      expect(r.inPlace.io.bytesWritten).toBe(0);
      expect(r.inPlace.io.bytesJournaled).toBe(0);
      await r.patch.abort(() => Promise.resolve());
    } finally {
      await r.close();
    }
    expect((await readFile(path)).equals(basis)).toBe(true);
  });

  test('a first batch past 8 MiB is held while the switch is open: rewritten data, then moved data, still switch with nothing to undo', async () => {
    // 3 MiB rewritten (literals, written where they are) and then everything
    // moved: the evidence is complete at about 9 MiB of output, past one batch.
    const target = Buffer.concat([randomBytes(3 * MiB), Buffer.from('twenty-four bytes added!'), basis.subarray(3 * MiB)]);
    const ops = diff(signatureOf(basis, { blockSize: BS }), target);
    const path = join(dir, 'held.img');
    await writeFile(path, basis);
    const r = await begin(path, target.length);
    try {
      let checked = false;
      for (const op of ops) {
        await r.patch.apply(op);
        if (checked || r.patch.state.switchedAt === null) continue;
        checked = true;
        expect(r.patch.state.switchedAt).toBeGreaterThan(8 * MiB);
        expect(r.inPlace.io.bytesWritten).toBe(0);
        expect(r.inPlace.io.bytesJournaled).toBe(0);
        expect((await readFile(path)).equals(basis)).toBe(true);
      }
      expect(checked).toBe(true);
      // The temp file took the prefix over with its hash: the result verifies.
      await r.patch.finish(target.length, imageHash(target));
    } finally {
      await r.close();
    }
    expect((await readFile(path)).equals(target)).toBe(true);
    expect(await leftovers()).toEqual([]);
  });

  test('a patch that moves nothing writes its first batch at 8 MiB: only a possible switch holds it', async () => {
    // 12 MiB rewritten where it is: literals, nothing moved.
    const target = Buffer.concat([randomBytes(12 * MiB), basis.subarray(12 * MiB)]);
    const ops = diff(signatureOf(basis, { blockSize: BS }), target);
    const path = join(dir, 'unheld.img');
    await writeFile(path, basis);
    const r = await begin(path, target.length);
    r.inPlace.backgroundFlush = false;
    try {
      for (const op of ops) {
        await r.patch.apply(op);
        if (r.patch.position >= 9 * MiB) break;
      }
      expect(r.inPlace.movedBytes).toBe(0);
      // The first batch (8 MiB while a switch is open), not yet the next (2 MiB).
      expect(r.inPlace.io.bytesJournaled).toBeGreaterThanOrEqual(8 * MiB);
      expect(r.inPlace.io.bytesJournaled).toBeLessThan(9 * MiB);
      await r.patch.abort(() => r.inPlace.rollback());
    } finally {
      await r.close();
    }
    expect((await readFile(path)).equals(basis)).toBe(true);
  });

  test('blocks changed where they are stay in place (same file, no switch)', async () => {
    const path = join(dir, 'scatter.img');
    await writeFile(path, basis);
    const inode = (await stat(path)).ino;
    const p = await patchAll(path, scatteredOps, scattered);
    expect(p.state.switchedAt).toBeNull();
    expect((await stat(path)).ino).toBe(inode);
    expect((await readFile(path)).equals(scattered)).toBe(true);
  });

  test('a long copy in place that starts inside a block is judged in pieces that end on block boundaries: only its first block is read to be hashed', async () => {
    const path = join(dir, 'midblock.img');
    await writeFile(path, basis);
    // 100 bytes rewritten inside block 0: the copy after them starts 1100 bytes into it and runs 47.9 MiB.
    const target = Buffer.from(basis);
    randomBytes(100).copy(target, 1000);
    const ops: DeltaOp[] = [
      { kind: 'copy', offset: 0, length: 1000 },
      { kind: 'literal', data: target.subarray(1000, 1100) },
      { kind: 'copy', offset: 1100, length: basis.length - 1100 },
    ];
    const r = await begin(path, target.length);
    try {
      for (const op of ops) await r.patch.apply(op);
      await r.patch.finish(target.length, imageHash(target));
    } finally {
      await r.close();
    }
    expect(r.patch.state.switchedAt).toBeNull();
    expect((await readFile(path)).equals(target)).toBe(true);
    // Block 0 around the literal; every later block is known from its digest. Pieces
    // of 1 MiB from the copy's start read two parts of one block at each of 47 ends.
    expect(r.inPlace.io.bytesRehashed).toBe(BS - 100);
    expect(r.inPlace.planner.stats.copyOps).toBe(2);
  });

  test('a switch after batches reached the image undoes them first: the image is the basis until the rename', async () => {
    const path = join(dir, 'flushed.img');
    await writeFile(path, basis);
    const r = await begin(path, shifted.length, { batchBytes: MiB });
    try {
      let checked = false;
      for (const op of shiftedOps) {
        await r.patch.apply(op);
        if (!checked && r.patch.state.switchedAt !== null) {
          checked = true;
          expect(r.inPlace.io.bytesWritten).toBeGreaterThan(0);
          expect((await readFile(path)).equals(basis)).toBe(true);
          expect(existsSync(journalPathFor(path))).toBe(false);
          // Its batch buffers went to the temp file's writer or were dropped: none is kept for the rest of the session.
          expect(r.inPlace.bufferBytes).toBe(0);
        }
      }
      expect(checked).toBe(true);
      await r.patch.finish(shifted.length, imageHash(shifted));
      // The batch buffers it was given are aligned, so the temp file is written with direct I/O all the same.
      if (await directSupported(dir)) expect(r.patch.tempBytesDirect).toBeGreaterThan(shifted.length / 2);
    } finally {
      await r.close();
    }
    expect((await readFile(path)).equals(shifted)).toBe(true);
  });

  test('the batch pending at a switch is dropped, not journaled and written only to be undone', async () => {
    const path = join(dir, 'pending.img');
    await writeFile(path, basis);
    const r = await begin(path, shifted.length, { batchBytes: 5 * MiB / 2 });
    r.inPlace.backgroundFlush = false;
    try {
      for (const op of shiftedOps) {
        await r.patch.apply(op);
        if (r.patch.state.switchedAt !== null) break;
      }
      const at = r.patch.state.switchedAt!;
      expect(at).not.toBeNull();
      // Batches reached the image before the switch; what followed the last one did not.
      expect(r.inPlace.io.bytesWritten).toBeGreaterThan(0);
      expect(r.inPlace.io.bytesJournaled).toBe(r.inPlace.io.bytesWritten);
      expect(r.inPlace.io.bytesJournaled).toBeLessThan(at - MiB - MiB / 2);
      await r.patch.abort(() => Promise.resolve());
    } finally {
      await r.close();
    }
    expect((await readFile(path)).equals(basis)).toBe(true);
    expect(await leftovers()).toEqual([]);
  });

  test('an undo that does not give back the signature pass digests is refused and the journal kept', async () => {
    const path = join(dir, 'tamper.img');
    await writeFile(path, basis);
    const digests = digestsOf(basis);
    digests[16 * 32] = (digests[16 * 32] ?? 0) ^ 1; // block 16 (1 MiB) is rewritten by the shift and restored by the undo
    const r = await begin(path, shifted.length, { batchBytes: MiB, digests });
    try {
      let err: unknown;
      try {
        for (const op of shiftedOps) await r.patch.apply(op);
      } catch (e) {
        err = e;
      }
      expect((err as { code?: string }).code).toBe('ERR_JOURNAL');
      // The session ends as a server's would, keeping progress: nothing is in place any more, and the journal still says so.
      await r.patch.abort(async () => void (await r.inPlace.suspend()));
    } finally {
      await r.close();
    }
    expect(existsSync(journalPathFor(path))).toBe(true);
    expect((await readJournal(journalPathFor(path)))!.checkpoint).toBe(0);
    // The journal still undoes everything: a recover proves the original.
    const out = await recoverLocked(path, journalPathFor(path));
    expect(out.outcome).toBe('rolled-back');
    expect((await readFile(path)).equals(basis)).toBe(true);
  });

  test('an abort after the switch removes the temp file; the image is the basis', async () => {
    const path = join(dir, 'abort.img');
    await writeFile(path, basis);
    const r = await begin(path, shifted.length);
    try {
      for (const op of shiftedOps) {
        await r.patch.apply(op);
        if (r.patch.state.switchedAt !== null) break;
      }
      expect(r.patch.state.switchedAt).not.toBeNull();
      let inPlaceAborted = false;
      await r.patch.abort(async () => {
        inPlaceAborted = true;
      });
      expect(inPlaceAborted).toBe(false);
    } finally {
      await r.close();
    }
    expect((await readFile(path)).equals(basis)).toBe(true);
    expect(await leftovers()).toEqual([]);
  });

  test('an image with another hard link stays in place (a rename would split the links)', async () => {
    const path = join(dir, 'linked.img');
    await writeFile(path, basis);
    await link(path, join(dir, 'linked-too.img'));
    const p = await patchAll(path, shiftedOps, shifted);
    expect(p.state.switchedAt).toBeNull();
    expect((await readFile(join(dir, 'linked-too.img'))).equals(shifted)).toBe(true);
    await rm(join(dir, 'linked-too.img'));
  });

  test('through a symbolic link the file it names is replaced, and the link stays', async () => {
    const real = join(dir, 'real.img');
    const path = join(dir, 'via-link.img');
    await writeFile(real, basis);
    await symlink(real, path);
    const p = await patchAll(path, shiftedOps, shifted);
    expect(p.state.switchedAt).not.toBeNull();
    expect((await lstat(path)).isSymbolicLink()).toBe(true);
    expect((await readFile(real)).equals(shifted)).toBe(true);
    await rm(path);
  });
});

/**
 * Patch `path` (the basis) to `shifted` in place with the switch on, in a
 * child process run with RESYNC_KILL_AT=`killAt`. `batchBytes`: the in-place
 * batch size; `untouched`: the switch must find the image untouched, and
 * the patch goes on to finish().
 */
async function runUntilKilled(path: string, killAt: string, o: { batchBytes?: number; untouched?: boolean }): Promise<SpawnSyncReturns<string>> {
  const opsPath = `${path}.ops.json`;
  const digestsPath = `${path}.digests`;
  await writeFile(opsPath, JSON.stringify(shiftedOps.map((op) => (op.kind === 'copy' ? op : { kind: 'literal', data: Buffer.from(op.data).toString('base64') }))));
  await writeFile(digestsPath, digestsOf(basis));
  const dist = (m: string): string => JSON.stringify(new URL(`../../dist/src/${m}`, import.meta.url).href);
  const script = `
    const { openImage } = await import(${dist('io/image.js')});
    const { InPlacePatcher } = await import(${dist('io/inplace.js')});
    const { AdaptivePatch } = await import(${dist('io/adaptive.js')});
    const { journalPathFor } = await import(${dist('io/journal.js')});
    const fs = await import('node:fs');
    const spec = { blockSize: ${BS}, strongAlg: 'blake3', seed: new Uint8Array(16).fill(7) };
    const ops = JSON.parse(fs.readFileSync(${JSON.stringify(opsPath)}, 'utf8')).map((o) => o.kind === 'copy' ? o : { kind: 'literal', data: Buffer.from(o.data, 'base64') });
    const img = await openImage(${JSON.stringify(path)}, 'r+');
    const p = await InPlacePatcher.start(img, journalPathFor(${JSON.stringify(path)}), { id: 't', targetSize: ${shifted.length} }, spec);
    p.useBasisDigests(new Uint8Array(fs.readFileSync(${JSON.stringify(digestsPath)})));
    ${o.batchBytes !== undefined ? `p.batchBytes = ${o.batchBytes}; p.firstBatchBytes = ${o.batchBytes}; p.holdFirstBytes = ${2 * o.batchBytes}; p.checkpointBytes = ${2 * o.batchBytes};` : ''}
    const a = new AdaptivePatch(img, p, ${shifted.length}, spec);
    for (const op of ops) await a.apply(op);
    ${
      o.untouched
        ? `if (a.state.switchedAt === null || p.io.bytesWritten !== 0) throw new Error('expected a switch with nothing written to the image');
    await a.finish(${shifted.length}, Buffer.from(${JSON.stringify(imageHash(shifted).toString('hex'))}, 'hex'));`
        : ''
    }
    console.log('not killed');
  `;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { env: { ...process.env, RESYNC_KILL_AT: killAt }, encoding: 'utf8' });
  await rm(opsPath);
  await rm(digestsPath);
  return r;
}

describe('killed while undoing for the switch', () => {
  test('the journal then says nothing new is in place, and a recover gives back the original', async () => {
    const path = join(dir, 'killed.img');
    await writeFile(path, basis);
    const r = await runUntilKilled(path, 'abandon-restored', { batchBytes: MiB });
    expect(r.signal).toBe('SIGKILL');
    const jpath = journalPathFor(path);
    expect(existsSync(jpath)).toBe(true);
    const st = await readJournal(jpath);
    // Checkpoints were written before the switch; the last one says 0.
    expect(st?.undos.length).toBeGreaterThan(2);
    expect(st?.checkpoint).toBe(0);
    // A new session takes the image as it finds it: nothing to skip.
    const settled = await settleJournal(path, jpath, { keep: true });
    expect(settled.resumeFrom).toBe(0);
    const out = await recoverLocked(path, jpath);
    expect(out.outcome).toBe('rolled-back');
    expect((await readFile(path)).equals(basis)).toBe(true);
    for (const f of await readdir(dir)) if (f.endsWith('.tmp')) await rm(join(dir, f));
  });
});

describe('killed after a switch that left the image untouched', () => {
  test('with the journal dropped and the temp file not yet renamed: the image is the original, and the next patch completes', async () => {
    const path = join(dir, 'killed-untouched.img');
    await writeFile(path, basis);
    const r = await runUntilKilled(path, 'switch-journal-dropped', { untouched: true });
    expect(r.signal, r.stderr + r.stdout).toBe('SIGKILL');
    expect((await readFile(path)).equals(basis)).toBe(true);
    expect(existsSync(journalPathFor(path))).toBe(false);
    // The next session starts from the original image and finishes.
    await patchAll(path, shiftedOps, shifted);
    expect((await readFile(path)).equals(shifted)).toBe(true);
    for (const f of await readdir(dir)) if (f.endsWith('.tmp')) await rm(join(dir, f));
  });
});

describe('over the network', () => {
  test('push of shifted data: the volume switches to a temp file; with tempFallback off it stays in place; both verified', async () => {
    const srvDir = await mkdtemp(join(dir, 'srv-'));
    const a = join(srvDir, 'a.img');
    const b = join(srvDir, 'b.img');
    const src = join(dir, 'push-src.img');
    await writeFile(a, basis);
    await writeFile(b, basis);
    await writeFile(src, shifted);
    const inodes = [(await stat(a)).ino, (await stat(b)).ino];
    const srv = await startServer({ a: { path: a, writable: true }, b: { path: b, writable: true, tempFallback: false } });
    try {
      for (const volume of ['a', 'b']) {
        const r = await push(src, { host: '127.0.0.1', port: srv.port, secret: srv.secret, volume, blockSize: BS });
        expect(r.verified).toBe(true);
      }
    } finally {
      await srv.server.close();
    }
    // The server's log says which push went on in a temp file (a cut one starts over): volume a's, not b's.
    const moved = srv.events.filter((e) => e.msg.includes('this push goes on in a temp file'));
    expect(moved.map((e) => e.volume)).toEqual(['a']);
    expect((await readFile(a)).equals(shifted)).toBe(true);
    expect((await readFile(b)).equals(shifted)).toBe(true);
    expect((await stat(a)).ino).not.toBe(inodes[0]);
    expect((await stat(b)).ino).toBe(inodes[1]);
    // No temp file is left; the volume patched in place keeps its signature cache (io/sigcache.ts), the renamed one none.
    expect((await readdir(srvDir)).filter((f) => f !== 'a.img' && f !== 'b.img')).toEqual(['b.img.resync-sig']);
  });

  test('push to a volume that is a symbolic link, with inPlace off: the file it names is replaced, the link stays', async () => {
    const srvDir = await mkdtemp(join(dir, 'srv-'));
    const file = join(srvDir, 'real.img');
    const linkPath = join(srvDir, 'link.img');
    const src = join(dir, 'link-src.img');
    await writeFile(file, basis);
    await symlink(file, linkPath);
    await writeFile(src, scattered);
    const srv = await startServer({ v: { path: linkPath, writable: true, inPlace: false } });
    try {
      const r = await push(src, { host: '127.0.0.1', port: srv.port, secret: srv.secret, volume: 'v', blockSize: BS });
      expect(r.verified).toBe(true);
    } finally {
      await srv.server.close();
    }
    expect((await lstat(linkPath)).isSymbolicLink()).toBe(true);
    expect((await readFile(file)).equals(scattered)).toBe(true);
  });

  test('pull of shifted data switches; --no-temp-fallback stays in place', async () => {
    const srvDir = await mkdtemp(join(dir, 'srv-'));
    const vol = join(srvDir, 'v.img');
    await writeFile(vol, shifted);
    const srv = await startServer({ v: { path: vol, writable: false } });
    try {
      for (const tempFallback of [true, false]) {
        const local = join(dir, `pull-${tempFallback}.img`);
        await writeFile(local, basis);
        const ino = (await stat(local)).ino;
        const r = await pull(local, { host: '127.0.0.1', port: srv.port, secret: srv.secret, volume: 'v', blockSize: BS, tempFallback });
        expect(r.verified).toBe(true);
        expect((await readFile(local)).equals(shifted)).toBe(true);
        if (tempFallback) expect((await stat(local)).ino).not.toBe(ino);
        else expect((await stat(local)).ino).toBe(ino);
      }
    } finally {
      await srv.server.close();
    }
    expect(await leftovers()).toEqual([]);
  });
});

describe('a push in a temp file cut on a flaky link', () => {
  test('leaves the volume as it was; the next push stays in place, is cut and kept, and the one after resumes it', { timeout: 120_000 }, async () => {
    const srvDir = await mkdtemp(join(dir, 'srv-'));
    const vol = join(srvDir, 'v.img');
    const src = join(dir, 'flaky-src.img');
    // Shifted from 1 MiB on, then 16 MiB of new data at 24 MiB: literals that
    // reach the server only after the switch (6 MiB of evidence) is done.
    const source = Buffer.from(shifted);
    randomBytes(16 * MiB).copy(source, 24 * MiB);
    await writeFile(vol, basis);
    await writeFile(src, source);
    const srv = await startServer({ v: { path: vol, writable: true } });
    const proxy = await FaultProxy.start(srv.port);
    const opts = { host: '127.0.0.1', port: proxy.port, secret: srv.secret, volume: 'v', blockSize: BS };
    try {
      // Cut once 8 MiB of the literals went up: the server is in its temp file by then.
      proxy.rules = { up: { cutAfter: 8 * MiB } };
      await expect(push(src, opts)).rejects.toThrow();
      await srv.server.idle();
      expect(srv.events.filter((e) => e.msg.includes('this push goes on in a temp file'))).toHaveLength(1);
      expect((await readFile(vol)).equals(basis)).toBe(true);
      expect(existsSync(journalPathFor(vol))).toBe(false);
      expect(existsSync(movedMarkerPath(vol))).toBe(true);

      // The same cut again: this push stays in place, and its progress is kept under the journal.
      await expect(push(src, opts)).rejects.toThrow();
      await srv.server.idle();
      expect(srv.events.filter((e) => e.msg.includes('this push goes on in a temp file'))).toHaveLength(1);
      expect(srv.events.filter((e) => e.msg.includes('this one stays in place'))).toHaveLength(1);
      expect(existsSync(journalPathFor(vol))).toBe(true);

      proxy.rules = {};
      const r = await push(src, opts);
      expect(r.verified).toBe(true);
      expect(r.resumedFrom).toBeGreaterThan(8 * MiB);
      expect((await readFile(vol)).equals(source)).toBe(true);
      expect(existsSync(movedMarkerPath(vol))).toBe(false);
      expect(existsSync(journalPathFor(vol))).toBe(false);
    } finally {
      await proxy.close();
      await srv.server.close();
    }
  });

  test('the server killed at the worst moment of a temp-file push (journal dropped, temp file not renamed): the volume as it was, and the next push stays in place and finishes', { timeout: 120_000 }, async () => {
    const srvDir = await mkdtemp(join(dir, 'srv-'));
    const vol = join(srvDir, 'v.img');
    const src = join(dir, 'killed-switch-src.img');
    await writeFile(vol, basis);
    await writeFile(src, shifted);
    const secretFile = join(srvDir, 'secret');
    await writeFile(secretFile, randomBytes(24).toString('base64'), { mode: 0o600 });
    const children: ChildProcess[] = [];
    try {
      const first = await serveChild(cliMain(), vol, secretFile, { RESYNC_KILL_AT: 'switch-journal-dropped' }, children);
      const exited = new Promise((r) => first.child.once('exit', r));
      const secret = await readFile(secretFile);
      await expect(push(src, { host: '127.0.0.1', port: first.port, secret, volume: 'v', blockSize: BS })).rejects.toThrow();
      await exited;
      expect(first.child.signalCode).toBe('SIGKILL');
      expect((await readFile(vol)).equals(basis)).toBe(true);
      expect(existsSync(journalPathFor(vol))).toBe(false);
      expect(existsSync(movedMarkerPath(vol))).toBe(true);
      // The killed server's temp file is its leftover, not the volume's.
      for (const f of await readdir(srvDir)) if (f.endsWith('.tmp')) await rm(join(srvDir, f));
      const srv = await startServer({ v: { path: vol, writable: true } });
      try {
        const r = await push(src, { host: '127.0.0.1', port: srv.port, secret: srv.secret, volume: 'v', blockSize: BS });
        expect(r.verified).toBe(true);
        expect(srv.events.filter((e) => e.msg.includes('this one stays in place'))).toHaveLength(1);
      } finally {
        await srv.server.close();
      }
      expect((await readFile(vol)).equals(shifted)).toBe(true);
      expect(existsSync(movedMarkerPath(vol))).toBe(false);
    } finally {
      for (const c of children) c.kill('SIGKILL');
    }
  });
});
