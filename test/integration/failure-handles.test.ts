/**
 * A step that fails after a file was opened must close it (and remove what
 * it made for nothing): a long-running server otherwise keeps a descriptor
 * per failure until the garbage collector runs, and with it the space of a
 * deleted journal on a full disk. Real files; a file-size limit set with
 * prlimit(1) on a child process stands in for a full disk.
 */
import { afterAll, beforeAll, expect, test } from 'vitest';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { deltaFile, patchFile, signatureFile } from '../../src/api/files.js';
import { heldUnder } from '../../src/testing/fds.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'resync-handles-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

test('patch --in-place whose signature cache cannot be dropped fails with a typed error and keeps no descriptor of the image', async () => {
  const d = join(dir, 'dropsig');
  await mkdir(d);
  const basis = join(d, 'basis.img');
  await writeFile(basis, Buffer.alloc(1 << 16, 1));
  await writeFile(join(d, 'new.img'), Buffer.alloc(1 << 16, 2));
  await signatureFile(basis, join(d, 'basis.sig'), { sigCache: false });
  await deltaFile(join(d, 'basis.sig'), join(d, 'new.img'), join(d, 'd.delta'));
  // A directory where the cache would be: deleting it fails (EISDIR).
  await mkdir(join(d, 'basis.img.resync-sig', 'x'), { recursive: true });
  await expect(patchFile(basis, join(d, 'd.delta'), basis, { inPlace: true })).rejects.toMatchObject({ code: 'ERR_IO' });
  expect(heldUnder(d)).toEqual([]);
});

test('a journal whose first write fails (file size limit) is closed and removed, and the error is typed', async () => {
  const d = join(dir, 'journal');
  await mkdir(d);
  const journal = join(d, 'img.resync-journal');
  const mod = resolve('dist/src/io/journal.js');
  // In a child under a 4-byte file size limit: the preamble's write gets EFBIG.
  const script = `
    const { Journal } = await import(${JSON.stringify(mod)});
    const fs = await import('node:fs');
    let code = null;
    try { await Journal.create(${JSON.stringify(journal)}, { id: 'x', targetSize: 1, originalSize: 1, originalHash: '00', hashSpec: null }); }
    catch (e) { code = e.code ?? String(e); }
    const held = fs.readdirSync('/proc/self/fd').map((f) => { try { return fs.readlinkSync('/proc/self/fd/' + f); } catch { return ''; } }).filter((l) => l.startsWith(${JSON.stringify(d)}));
    process.stdout.write(JSON.stringify({ code, held, exists: fs.existsSync(${JSON.stringify(journal)}) }));
  `;
  const r = spawnSync('prlimit', ['--fsize=4', process.execPath, '--input-type=module', '-e', script], { encoding: 'utf8' });
  expect(r.stderr).toBe('');
  const out = JSON.parse(r.stdout) as { code: string | null; held: string[]; exists: boolean };
  expect(out.code).toMatch(/^ERR_/);
  expect(out.held).toEqual([]);
  expect(out.exists).toBe(false);
  expect(existsSync(journal)).toBe(false);
});

test('a lock file whose holder cannot be written (file size limit) is removed, and the error is typed', async () => {
  const d = join(dir, 'lockfile');
  await mkdir(d);
  const img = join(d, 'img');
  await writeFile(img, 'x');
  const mod = resolve('dist/src/io/lock.js');
  const script = `
    const { lockImage } = await import(${JSON.stringify(mod)});
    const fs = await import('node:fs');
    let code = null;
    try { await lockImage(${JSON.stringify(img)}, 'write'); } catch (e) { code = e.code ?? String(e); }
    process.stdout.write(JSON.stringify({ code, left: fs.readdirSync(${JSON.stringify(d)}) }));
  `;
  // RESYNC_LOCK_FILE=1: the lock file of systems without flock, not the kernel's lock.
  const r = spawnSync('prlimit', ['--fsize=0', process.execPath, '--input-type=module', '-e', script], { encoding: 'utf8', env: { ...process.env, RESYNC_LOCK_FILE: '1' } });
  expect(r.stderr).toBe('');
  const out = JSON.parse(r.stdout) as { code: string | null; left: string[] };
  expect(out.code).toMatch(/^ERR_/);
  expect(out.left).toEqual(['img']);
});
