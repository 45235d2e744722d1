/**
 * Block devices as images: a loop device over a temp file stands in for a
 * disk. openImage must report the device's size; a push to a volume on the
 * device and an in-place file patch of it must rewrite its contents without
 * trying to change its size; verify reads it like a file. Needs root and
 * losetup; otherwise the suite is skipped and says why.
 */
import { afterAll, describe, expect, test } from 'vitest';
import { journalPathFor } from '../../src/io/journal.js';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { open, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateImage } from '../../src/testing/workload.js';
import { openImage } from '../../src/io/image.js';
import { deltaFile, patchFile, signatureFile } from '../../src/api/files.js';
import { push } from '../../src/net/client.js';
import { verifyFiles, verifyRemote } from '../../src/api/verify.js';
import { startServer } from '../helpers/server.js';
import { cliMain } from '../../bench/killpoints.js';

const MiB = 1024 * 1024;
const DEV_SIZE = 6 * MiB;

const dir = mkdtempSync(join(tmpdir(), 'resync-blockdev-'));
const backing = join(dir, 'backing.img');
let dev = '';
let reason = '';
if (process.platform !== 'linux') reason = 'loop devices need Linux';
else if (process.getuid?.() !== 0) reason = 'creating a loop device needs root';
else {
  try {
    writeFileSync(backing, generateImage(DEV_SIZE, 1));
    dev = execFileSync('losetup', ['-f', '--show', backing], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();
  } catch (e) {
    reason = `losetup -f --show failed: ${(e as { stderr?: Buffer | string }).stderr?.toString().trim() || (e as Error).message}`;
  }
}

afterAll(() => {
  if (dev) {
    try {
      execFileSync('losetup', ['-d', dev]);
    } catch {
      // already detached
    }
    rmSync(journalPathFor(dev), { force: true });
  }
  rmSync(dir, { recursive: true, force: true });
});

/** The whole device's contents. */
async function readDevice(): Promise<Buffer> {
  const fh = await open(dev, 'r');
  try {
    const b = Buffer.alloc(DEV_SIZE);
    let off = 0;
    while (off < DEV_SIZE) {
      const { bytesRead } = await fh.read(b, off, DEV_SIZE - off, off);
      if (bytesRead === 0) break;
      off += bytesRead;
    }
    return b.subarray(0, off);
  } finally {
    await fh.close();
  }
}

/** A variant of `b` with a few scattered 4 KiB overwrites. */
function edited(b: Buffer, seed: number): Buffer {
  const out = Buffer.from(b);
  for (let k = 0; k < 6; k++) out.set(generateImage(4096, seed * 100 + k), ((k * 977 + seed * 131) % (DEV_SIZE / 4096 - 1)) * 4096);
  return out;
}

if (!dev) {
  describe('block devices', () => {
    test.skip(`skipped: ${reason}`, () => undefined);
  });
}

describe.runIf(dev)('block devices (loop device)', () => {
  test('openImage reads the device size, not the 0 that stat reports', async () => {
    const img = await openImage(dev);
    try {
      expect(img.isBlockDevice).toBe(true);
      expect(img.size).toBe(DEV_SIZE);
    } finally {
      await img.fh.close();
    }
    const rw = await openImage(dev, 'r+');
    await rw.fh.close();
    expect((await readDevice()).length).toBe(DEV_SIZE);
  });

  test('a push to a volume on the device rewrites it in place, size unchanged', async () => {
    const source = edited(await readDevice(), 1);
    const src = join(dir, 'source.img');
    await writeFile(src, source);
    const srv = await startServer({ disk: { path: dev, writable: true } });
    try {
      const opts = { host: '127.0.0.1', port: srv.port, secret: srv.secret, volume: 'disk' };
      const r = await push(src, opts);
      expect(r.verified).toBe(true);
      expect(r.literalBytes).toBeLessThan(DEV_SIZE / 4);
      const now = await readDevice();
      expect(now.length).toBe(DEV_SIZE);
      expect(now.equals(source)).toBe(true);
      expect(existsSync(`${dev}.resync-journal`)).toBe(false);
      expect((await verifyRemote(src, opts)).identical).toBe(true);
      // A source larger than the device is refused before anything is written.
      const big = join(dir, 'big.img');
      await writeFile(big, Buffer.concat([source, Buffer.alloc(MiB, 1)]));
      await expect(push(big, opts)).rejects.toMatchObject({ code: 'ERR_PARAM' });
      expect((await readDevice()).equals(source)).toBe(true);
      // A smaller source rewrites the start; the device keeps its size and the rest.
      const small = join(dir, 'small.img');
      const smaller = edited(source, 3).subarray(0, DEV_SIZE - MiB);
      await writeFile(small, smaller);
      const notes: string[] = [];
      expect((await push(small, { ...opts, onNote: (n: string) => notes.push(n) })).verified).toBe(true);
      // The pushing operator is told, not only the server's log.
      expect(notes).toEqual([expect.stringMatching(new RegExp(`^the server says: volume disk is ${DEV_SIZE} bytes and the pushed image ${DEV_SIZE - MiB}: its last ${MiB} bytes are left as they were \\(the block device does not shrink\\)`))]);
      const after = await readDevice();
      expect(after.length).toBe(DEV_SIZE);
      expect(after.subarray(0, DEV_SIZE - MiB).equals(smaller)).toBe(true);
      expect(after.subarray(DEV_SIZE - MiB).equals(source.subarray(DEV_SIZE - MiB))).toBe(true);
      const v = await verifyRemote(small, opts);
      expect(v.sizeB).toBe(DEV_SIZE);
      expect(v.ranges).toEqual([{ offset: DEV_SIZE - MiB, length: MiB }]);
    } finally {
      await srv.server.close();
      await rm(srv.dir, { recursive: true, force: true });
    }
  });

  test('patch --in-place on the device, then verify against the new image', async () => {
    const sig = join(dir, 'dev.sig');
    await signatureFile(dev, sig);
    const target = edited(await readDevice(), 2);
    const tgt = join(dir, 'target.img');
    await writeFile(tgt, target);
    const delta = join(dir, 'dev.delta');
    await deltaFile(sig, tgt, delta);
    const r = await patchFile(dev, delta, dev, { inPlace: true });
    expect('bytesWritten' in r && r.bytesWritten).toBeLessThan(DEV_SIZE / 4);
    const now = await readDevice();
    expect(now.length).toBe(DEV_SIZE);
    expect(now.equals(target)).toBe(true);
    expect((await verifyFiles(dev, tgt)).identical).toBe(true);
    // The backing file was written through the device, never truncated.
    expect((await readFile(backing)).length).toBe(DEV_SIZE);
  });

  test('patch onto the device without --in-place goes in place; a device as another patch output is refused', async () => {
    const sig = join(dir, 'dev2.sig');
    await signatureFile(dev, sig);
    const target = edited(await readDevice(), 3);
    const tgt = join(dir, 'target2.img');
    await writeFile(tgt, target);
    const delta = join(dir, 'dev2.delta');
    await deltaFile(sig, tgt, delta);
    await patchFile(dev, delta, dev);
    expect((await readDevice()).equals(target)).toBe(true);
    // a temp file renamed over a device node would replace the node, not write the disk
    const other = join(dir, 'other-basis.img');
    await writeFile(other, target);
    const d2 = join(dir, 'dev3.delta');
    await signatureFile(other, join(dir, 'o.sig'));
    await deltaFile(join(dir, 'o.sig'), tgt, d2);
    await expect(patchFile(other, d2, dev)).rejects.toMatchObject({ code: 'ERR_PARAM' });
    expect((await readDevice()).equals(target)).toBe(true);
  });

  test('a journal left on the device is not applied to another disk that now has its name; on its own disk it is', { timeout: 60_000 }, async () => {
    const cli = cliMain();
    const env = { ...process.env, RESYNC_JOURNAL_DIR: join(dir, 'journals') };
    const run = (args: string[], extra: Record<string, string> = {}) => spawnSync(process.execPath, [cli, ...args], { env: { ...env, ...extra }, encoding: 'utf8' });
    const original = await readDevice();
    const target = edited(original, 5);
    const tgt = join(dir, 'target5.img');
    await writeFile(tgt, target);
    expect(run(['signature', dev, join(dir, 'dev5.sig'), '-f']).status).toBe(0);
    expect(run(['delta', join(dir, 'dev5.sig'), tgt, join(dir, 'dev5.delta'), '-f']).status).toBe(0);
    // A patch killed after its first batch reached the disk: the journal stays, named for the device.
    const killed = run(['patch', dev, join(dir, 'dev5.delta'), '--in-place'], { RESYNC_KILL_AT: 'inplace-written:1' });
    expect(killed.signal).toBe('SIGKILL');
    const half = await readDevice();
    expect(half.equals(original)).toBe(false);
    // The disk goes; another of the same size comes under the same name.
    const other = generateImage(DEV_SIZE, 77);
    const otherFile = join(dir, 'other-disk.img');
    writeFileSync(otherFile, other);
    execFileSync('losetup', ['-d', dev]);
    execFileSync('losetup', [dev, otherFile]);
    try {
      const refused = run(['recover', dev]);
      expect(refused.status).toBe(9);
      expect(refused.stderr).toMatch(/ERR_JOURNAL.*another disk has this name.*nothing was written/s);
      expect((await readDevice()).equals(other)).toBe(true);
      // Reads of it are refused while that journal is there, as before.
      expect(run(['signature', dev, join(dir, 'x.sig'), '-f']).status).toBe(9);
    } finally {
      execFileSync('losetup', ['-d', dev]);
      execFileSync('losetup', [dev, backing]);
    }
    // Back on its own disk, the journal rolls it back.
    const ok = run(['recover', dev, '--json']);
    expect(ok.status, ok.stderr).toBe(0);
    expect(JSON.parse(ok.stdout)).toMatchObject({ outcome: 'rolled-back', verified: true });
    expect((await readDevice()).equals(original)).toBe(true);
    expect((await readFile(otherFile)).equals(other)).toBe(true);
  });
});
