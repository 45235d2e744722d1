/**
 * NBD with the real qemu tools: qcow2 images exported by qemu-nbd are pushed
 * to a resync server and pulled into, and the guest-visible contents are
 * compared with qemu-img compare.
 */
import { beforeAll, describe, expect, test } from 'vitest';
import { copyFile, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import { push, pull } from '../../src/api/net.js';
import { openNbdImage } from '../../src/io/nbd/image.js';
import { readPieces } from '../../src/io/sparse.js';
import { UndoPatcher } from '../../src/io/undo-patcher.js';
import { makeSignatureParams } from '../../src/core/signature.js';
import { zstdStatus } from '../../protocol/literal-codec.js';
import type { TestServer } from '../helpers/server.js';
import { runCli } from '../helpers/cli.js';
import { hasQemu, qcow2Disk, nbdTestBed, qemuImg, qemuIo, sameContent, startNbd } from '../helpers/qemu.js';

const CLI = join(fileURLToPath(new URL('../..', import.meta.url)), 'bin/resync.js');
let dir: string;
let srv: TestServer;
const MiB = 1 << 20;

const bed = nbdTestBed('resync-nbd-', 'recovery.img');
beforeAll(() => {
  ({ dir, srv } = bed);
  // Export journals (io/nbd/undo.ts) go to the default state directory: keep them here.
  process.env.XDG_STATE_HOME = join(dir, 'state');
});

const client = () => ({ host: '127.0.0.1', port: srv.port, secret: srv.secret, volume: 'rec' });

describe.skipIf(!hasQemu)('NBD against qemu-nbd', () => {
  test('a qcow2 export is pushed by its guest-visible content, its zero runs not read', async () => {
    const q = join(dir, 'primary.qcow2');
    qemuImg('create', '-f', 'qcow2', q, '64M');
    qemuIo(q, 'write -P 0xab 1M 64k', 'write -P 0x11 10M 3M', 'write -z 20M 1M');
    await rm(join(dir, 'recovery.img'), { force: true });
    const nbd = await startNbd(dir, q, { readOnly: true });

    // The zero runs base:allocation reports come out as zero pieces, never read.
    const img = await openNbdImage(nbd.uri);
    let data = 0;
    for await (const p of readPieces(img, { chunk: MiB, align: 4096 })) if (!p.zero) data += p.length;
    await img.nbd.close();
    expect(data).toBe(64 * 1024 + 3 * MiB);

    const r = await push(nbd.uri, client());
    expect(r.verified).toBe(true);
    expect(r.imageSize).toBe(64 * MiB);
    await nbd.stop();
    expect(sameContent(q, join(dir, 'recovery.img'))).toBe(true);

    // An incremental push after a small guest write sends little.
    qemuIo(q, 'write -P 0xcd 30M 64k');
    const nbd2 = await startNbd(dir, q, { readOnly: true, tcp: true });
    expect(nbd2.uri).toMatch(/^nbd:\/\/127\.0\.0\.1:\d+\/disk$/);
    const r2 = await push(nbd2.uri, client());
    expect(r2.literalBytes).toBeLessThanOrEqual(128 * 1024);
    await nbd2.stop();
    expect(sameContent(q, join(dir, 'recovery.img'))).toBe(true);
  }, 60_000);

  test('a stalled source export times out by the push\'s own --timeout, and is named as what stalled', async () => {
    const q = join(dir, 'stalled.qcow2');
    qemuImg('create', '-f', 'qcow2', q, '64M');
    qemuIo(q, 'write -P 0x5a 0 32M');
    const nbd = await startNbd(dir, q, { readOnly: true });
    // Stopped once the push has opened it: its requests go unanswered from then on.
    const p = push(nbd.uri, { ...client(), idleTimeoutMs: 1500, onProgress: () => process.kill(nbd.pid, 'SIGSTOP') });
    const t0 = Date.now();
    try {
      await expect(p).rejects.toMatchObject({ code: 'ERR_TIMEOUT', message: expect.stringMatching(/^the NBD server .* did not answer for 1\.5 s/) });
      // The push's timeout, not the 60 s an NBD request gets by default.
      expect(Date.now() - t0).toBeLessThan(20_000);
    } finally {
      process.kill(nbd.pid, 'SIGCONT');
      await nbd.stop();
    }
  }, 60_000);

  test('a pull writes the remote volume into a qcow2 export (failback), flushed', async () => {
    const vol = Buffer.concat([randomBytes(2 * MiB), Buffer.alloc(4 * MiB), randomBytes(2 * MiB)]);
    await writeFile(join(dir, 'recovery.img'), vol);
    const q = join(dir, 'local.qcow2');
    qemuImg('create', '-f', 'qcow2', q, '8M');
    // The local disk has data of its own.
    qemuIo(q, 'write -P 0x55 5M 256k', 'write -P 0x66 7M 4k');
    const nbd = await startNbd(dir, q);
    const r = await pull(nbd.uri, client());
    expect(r.verified).toBe(true);
    await nbd.stop();
    expect(sameContent(q, join(dir, 'recovery.img'))).toBe(true);

    // Pulled again: nothing left to change.
    const nbd2 = await startNbd(dir, q);
    const r2 = await pull(nbd2.uri, client());
    expect(r2.literalBytes).toBe(0);
    expect(r2.bytesWritten).toBe(0);
  }, 60_000);

  test('a pull of a smaller volume into a larger export says the export keeps its tail', async () => {
    const vol = randomBytes(3 * MiB);
    await writeFile(join(dir, 'recovery.img'), vol);
    const q = join(dir, 'larger.qcow2');
    qemuImg('create', '-f', 'qcow2', q, '4M');
    qemuIo(q, 'write -P 0x77 3M 1M');
    const nbd = await startNbd(dir, q);
    const notes: string[] = [];
    const r = await pull(nbd.uri, { ...client(), onNote: (m: string) => notes.push(m) });
    await nbd.stop();
    expect(r.verified).toBe(true);
    expect(notes.join('\n')).toMatch(/is 4194304 bytes and the remote image 3145728: its last 1048576 bytes are left as they were/);
  }, 60_000);

  test('a patch that fails verification puts the export back as it was', async () => {
    const { q, raw: before } = qcow2Disk(dir, 'rollback', 4, 'write -P 0x42 0 1M', 'write -P 0x43 2M 1M');
    const nbd = await startNbd(dir, q);
    const img = await openNbdImage(nbd.uri, { write: true });
    const spec = makeSignatureParams(img.size, Buffer.alloc(16), { blockSize: 4096 });
    const p = await UndoPatcher.start(img.nbd, img.size, img.size, spec, null);
    // Move the second MiB to the front (reads a range the patch overwrites later), then new data.
    await p.apply({ kind: 'copy', offset: 2 * MiB, length: MiB });
    await p.apply({ kind: 'copy', offset: 0, length: MiB });
    await p.apply({ kind: 'literal', data: randomBytes(MiB) });
    await p.apply({ kind: 'copy', offset: 3 * MiB, length: MiB });
    await expect(p.finish(img.size, Buffer.alloc(32))).rejects.toMatchObject({ code: 'ERR_VERIFY_FAILED' });
    expect(p.bytesWritten).toBe(3 * MiB);
    await p.rollback();
    await img.nbd.close();
    await nbd.stop();
    expect(sameContent(q, before)).toBe(true);
  }, 60_000);

  test('refusals: no such export, a read-only export to pull into, a volume larger than the export', async () => {
    const q = join(dir, 'small.qcow2');
    qemuImg('create', '-f', 'qcow2', q, '1M');
    const ro = await startNbd(dir, q, { readOnly: true });
    await expect(push(ro.uri.replace('/disk?', '/nosuch?'), client())).rejects.toMatchObject({ code: 'ERR_NBD', message: /refused export "nosuch"/ });
    await expect(pull(ro.uri, client())).rejects.toMatchObject({ code: 'ERR_NBD', message: /read-only/ });
    await ro.stop();
    await writeFile(join(dir, 'recovery.img'), randomBytes(2 * MiB));
    const rw = await startNbd(dir, q);
    await expect(pull(rw.uri, client())).rejects.toMatchObject({ code: 'ERR_PARAM', message: /does not grow/ });
    await expect(openNbdImage(rw.uri, { dirtyBitmap: 'b0' })).rejects.toMatchObject({ code: 'ERR_NBD', message: /does not offer the dirty bitmap/ });
    await rw.stop();
    expect((await readFile(join(dir, 'recovery.img'))).length).toBe(2 * MiB);
  }, 60_000);

  test('--dirty-bitmap: only the blocks the bitmap marks are read, summed and sent; the replica matches', async () => {
    const q = join(dir, 'vm.qcow2');
    qemuImg('create', '-f', 'qcow2', q, '64M');
    qemuIo(q, 'write -P 0x21 0 8M', 'write -P 0x22 40M 4M');
    // The full sync the bitmap starts from.
    const full = await startNbd(dir, q, { readOnly: true });
    await push(full.uri, client());
    await full.stop();
    qemuImg('bitmap', '--add', q, 'since-sync');
    qemuIo(q, 'write -P 0xab 1M 64k', 'write -P 0xcd 50M 128k', 'write -P 0x21 2M 64k');
    const nbd = await startNbd(dir, q, { readOnly: true, bitmap: 'since-sync' });
    const r = await push(nbd.uri, { ...client(), dirtyBitmap: 'since-sync', blockSize: 16384 });
    expect(r.verified).toBe(true);
    expect(r.verifiedScope).toBe('dirty');
    // 64k + 128k + 64k marked; the last write put back what was there, so it is copied, not sent.
    expect(r.dirtyBytes).toBe(256 * 1024);
    expect(r.bytesRead).toBe(256 * 1024);
    expect(r.literalBytes).toBe(192 * 1024);
    expect(r.bytesWritten).toBe(192 * 1024);
    await nbd.stop();
    expect(sameContent(q, join(dir, 'recovery.img'))).toBe(true);

    // No bitmap on the export, or not over NBD: refused before anything is sent.
    const plain = await startNbd(dir, q, { readOnly: true });
    await expect(push(plain.uri, { ...client(), dirtyBitmap: 'since-sync' })).rejects.toMatchObject({ code: 'ERR_NBD', message: /does not offer the dirty bitmap/ });
    await plain.stop();
    await expect(push(join(dir, 'recovery.img'), { ...client(), dirtyBitmap: 'since-sync' })).rejects.toMatchObject({ code: 'ERR_PARAM' });
  }, 90_000);

  test('push --dirty-bitmap --compress: the dirty literals travel compressed, by the codec and level asked for, and the replica matches', async () => {
    const q = join(dir, 'zvm.qcow2');
    qemuImg('create', '-f', 'qcow2', q, '32M');
    qemuIo(q, 'write -P 0x41 0 4M');
    const full = await startNbd(dir, q, { readOnly: true });
    await push(full.uri, client());
    await full.stop();
    // The replica as the full sync left it: each push below starts from it.
    const synced = join(dir, 'zvm-synced.raw');
    await copyFile(join(dir, 'recovery.img'), synced);
    qemuImg('bitmap', '--add', q, 'b1');
    // What a guest writes: log text (compresses well) and some random bytes (does not).
    const text = join(dir, 'zvm-log.txt');
    let log = '';
    for (let i = 0; log.length < 256 * 1024; i++) log += `Dec  5 05:${String(i % 60).padStart(2, '0')}:17 vm1 kernel: eth0: rx ${(i * 7919) % 100003} packets, ${(i * 104729) % 1000003} bytes\n`;
    await writeFile(text, log.slice(0, 256 * 1024));
    const noise = join(dir, 'zvm-noise.bin');
    await writeFile(noise, randomBytes(64 * 1024));
    qemuIo(q, `write -s ${text} 1M 256k`, `write -s ${noise} 9M 64k`, `write -s ${text} 20M 256k`);
    const nbd = await startNbd(dir, q, { readOnly: true, bitmap: 'b1' });
    const remote = `127.0.0.1:${srv.port}/rec`;
    const run = async (flags: string[], env?: Record<string, string>) => {
      await copyFile(synced, join(dir, 'recovery.img'));
      const r = await runCli(CLI, ['push', '--json', '--dirty-bitmap', 'b1', ...flags, '--secret-file', srv.secretFile, nbd.uri, remote], { env });
      expect(r.code, r.stderr).toBe(0);
      expect(sameContent(q, join(dir, 'recovery.img'))).toBe(true);
      return { out: JSON.parse(r.stdout) as Record<string, unknown>, stderr: r.stderr };
    };
    const plain = (await run(['--no-compress'])).out;
    expect(plain).toMatchObject({ ok: true, verifiedScope: 'dirty', dirtyBytes: 576 * 1024, literalBytes: 576 * 1024 });
    expect(plain.compression).toBeUndefined();
    // The best both sides have by default: zstd at its level 3 here (DEFLATE at 1 where zstd-napi does not load).
    const best = (await run(['--compress'])).out;
    expect(best).toMatchObject({ ok: true, literalBytes: 576 * 1024, compression: zstdStatus().available ? 'zstd:3' : 'deflate:1' });
    const deflate = (await run(['--compress-choice', 'deflate', '--compress-level', '6'])).out;
    expect(deflate).toMatchObject({ ok: true, literalBytes: 576 * 1024, compression: 'deflate:6' });
    // Where zstd does not load, an explicit zstd choice falls back to DEFLATE with a note, as a plain push does.
    const fallback = await run(['--compress-choice', 'zstd'], { RESYNC_ZSTD: '0' });
    expect(fallback.out).toMatchObject({ ok: true, compression: 'deflate:1' });
    expect(fallback.stderr).toContain('resync push: note: zstd is not available here (turned off by RESYNC_ZSTD=0); compressing with deflate');
    // bytesSent counts what went on the wire: the text shrinks, the random 64 KiB cannot.
    for (const c of [best, deflate, fallback.out]) {
      expect(c.bytesSent as number).toBeLessThan((plain.bytesSent as number) * 0.5);
      expect(c.bytesSent as number).toBeGreaterThan(64 * 1024);
    }
    await nbd.stop();
  }, 90_000);

  test('a dirty push that did not finish keeps the volume from being read until a full push', async () => {
    await writeFile(join(dir, 'recovery.img.resync-dirty'), '');
    const q = join(dir, 'fresh.qcow2');
    qemuImg('create', '-f', 'qcow2', q, '4M');
    const nbd = await startNbd(dir, q);
    await expect(pull(nbd.uri, client())).rejects.toMatchObject({ code: 'ERR_BUSY', message: /dirty-bitmap push to this volume did not finish/ });
    await nbd.stop();
    const src = join(dir, 'src.raw');
    await writeFile(src, randomBytes(4 * MiB));
    await push(src, client());
    await expect(readFile(join(dir, 'recovery.img.resync-dirty'))).rejects.toMatchObject({ code: 'ENOENT' });
  }, 60_000);

  test('through the CLI: push --dirty-bitmap and signature/delta/verify on an NBD URI, ERR_NBD as exit 7', async () => {
    const q = join(dir, 'cli.qcow2');
    qemuImg('create', '-f', 'qcow2', q, '16M');
    qemuIo(q, 'write -P 0x31 0 4M');
    await writeFile(join(dir, 'recovery.img'), Buffer.alloc(16 * MiB));
    const first = await startNbd(dir, q, { readOnly: true });
    const remote = `127.0.0.1:${srv.port}/rec`;
    // The export's digest cache goes to a state directory of the test's own, not the user's.
    const env = { XDG_STATE_HOME: join(dir, 'cli-state') };
    const full = await runCli(CLI, ['push', '--json', '--secret-file', srv.secretFile, first.uri, remote], { env });
    expect(full.code, full.stderr).toBe(0);
    await first.stop();
    qemuImg('bitmap', '--add', q, 'b0');
    qemuIo(q, 'write -P 0x32 8M 64k');
    const nbd = await startNbd(dir, q, { readOnly: true, bitmap: 'b0' });
    // Another socket than the full push's: another export as far as the digest cache knows, so the dirty blocks are what is verified.
    const r = await runCli(CLI, ['push', '--json', '--dirty-bitmap', 'b0', '--secret-file', srv.secretFile, nbd.uri, remote], { env });
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ ok: true, verified: true, verifiedScope: 'dirty', dirtyBytes: 65536, literalBytes: 65536 });
    // The summary counts the blocks it did not read as matched: a note says what was verified, and why no more.
    expect(r.stderr).toContain('resync push: note: verified the 65536 bytes the bitmap marks, not the whole image (the primary has no digest cache for this replica');
    expect((await readdir(join(dir, 'cli-state', 'resync'))).filter((f) => f.startsWith('digests-'))).toHaveLength(1);
    const sig = join(dir, 'cli.sig');
    expect((await runCli(CLI, ['signature', '--force', nbd.uri, sig])).code).toBe(0);
    expect((await runCli(CLI, ['delta', '--force', sig, join(dir, 'recovery.img'), join(dir, 'cli.delta')])).code).toBe(0);
    const v = await runCli(CLI, ['verify', '--json', nbd.uri, join(dir, 'recovery.img')]);
    expect(v.code, v.stderr).toBe(0);
    // As the second argument too: a URI, not an ssh host named "nbd+unix".
    const v2 = await runCli(CLI, ['verify', '--json', join(dir, 'recovery.img'), nbd.uri]);
    expect(v2.code, v2.stderr).toBe(0);
    const bad = await runCli(CLI, ['push', '--json', '--secret-file', srv.secretFile, nbd.uri.replace('/disk?', '/nosuch?'), remote], { env });
    expect(bad.code).toBe(7);
    expect(JSON.parse(bad.stdout)).toMatchObject({ ok: false, code: 'ERR_NBD' });
  }, 90_000);

  test('patch --in-place into an NBD export: verified and flushed; a delta for another basis leaves it as it was', async () => {
    const q = join(dir, 'patch.qcow2');
    qemuImg('create', '-f', 'qcow2', q, '8M');
    qemuIo(q, 'write -P 0x41 0 3M', 'write -P 0x42 5M 1M');
    const nbd = await startNbd(dir, q);
    const sig = join(dir, 'patch.sig');
    expect((await runCli(CLI, ['signature', '--force', nbd.uri, sig])).code).toBe(0);
    // The new image: the export's content with a block moved and some new data.
    const img = await openNbdImage(nbd.uri);
    const old = await img.nbd.read(0, img.size);
    await img.nbd.close();
    const target = Buffer.from(old);
    old.copy(target, 6 * MiB, 0, MiB);
    randomBytes(200_000).copy(target, 2 * MiB + 12345);
    await writeFile(join(dir, 'patch-target.raw'), target);
    const delta = join(dir, 'patch.delta');
    expect((await runCli(CLI, ['delta', '--force', sig, join(dir, 'patch-target.raw'), delta])).code).toBe(0);
    const r = await runCli(CLI, ['patch', '--json', '--in-place', nbd.uri, delta]);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ ok: true, verified: true });
    await nbd.stop();
    expect(sameContent(q, join(dir, 'patch-target.raw'))).toBe(true);
    // A basis that is not the delta's (the block the delta copies was changed): refused, and the export put back.
    qemuIo(q, 'write -P 0x99 0 4k');
    const changed = join(dir, 'patch-changed.raw');
    qemuImg('convert', '-f', 'qcow2', '-O', 'raw', q, changed);
    const nbd2 = await startNbd(dir, q);
    const again = await runCli(CLI, ['patch', '--json', '--in-place', nbd2.uri, delta]);
    expect(again.code, again.stdout).toBe(4);
    expect(JSON.parse(again.stdout)).toMatchObject({ code: 'ERR_BASIS_MISMATCH', message: /not the image the signature was made from/ });
    await nbd2.stop();
    expect(sameContent(q, changed)).toBe(true);
  }, 90_000);
});
