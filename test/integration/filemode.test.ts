/**
 * Outputs keep the mode, owner and group of the file they replace, and new
 * files get 0666 less the umask (as rdiff or cp would make them): `patch`
 * through a temp file, a pull or push through a temp file, a pull into a new
 * file and a new server volume. A 0660 nobody:nogroup image must not come
 * back 0600 root:root (a VM then fails to start). Outputs stay sparse.
 */
import { randomBytes } from 'node:crypto';
import { chmod, chown, mkdir, mkdtemp, open, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { deltaFile, patchFile, signatureFile } from '../../src/api/files.js';
import { pull, push } from '../../src/net/client.js';
import { openOrCreateImage } from '../../src/io/image.js';
import { ImageWriter } from '../../src/io/output.js';
import { outputMetaFor } from '../../src/io/filemode.js';
import { startServer, type TestServer } from '../helpers/server.js';

const MiB = 1024 * 1024;
const CLI = fileURLToPath(new URL('../../bin/resync.js', import.meta.url));
/** nobody:nogroup on Debian; any ids other than ours do. */
const NOBODY = 65534;
const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;

let dir: string;
let srv: TestServer;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'resync-filemode-'));
  srv = await startServer({
    rec: { path: join(dir, 'srv-rec.img'), writable: true, inPlace: false },
    fresh: { path: join(dir, 'srv-fresh.img'), writable: true, inPlace: false },
    freshInPlace: { path: join(dir, 'srv-fresh-ip.img'), writable: true },
  });
});
afterAll(async () => {
  await srv?.server.close();
  await rm(dir, { recursive: true, force: true });
});

const newFileMode = (): number => 0o666 & ~process.umask();
const perm = async (p: string): Promise<number> => (await stat(p)).mode & 0o7777;

/** A sparse image: `size` bytes with random data at a few places. */
async function image(name: string, size: number, seed: number): Promise<string> {
  const p = join(dir, name);
  const fh = await open(p, 'w');
  await fh.truncate(size);
  for (let i = 0; i < 3; i++) await fh.write(randomBytes(64 * 1024), 0, 64 * 1024, ((seed * 7 + i * 3) % 15) * 256 * 1024);
  await fh.close();
  return p;
}

async function makeDelta(basis: string, target: string, tag: string): Promise<string> {
  await signatureFile(basis, join(dir, `${tag}.sig`));
  await deltaFile(join(dir, `${tag}.sig`), target, join(dir, `${tag}.delta`));
  return join(dir, `${tag}.delta`);
}

describe('file mode', () => {
  test('patch over an existing 0660 nobody:nogroup output keeps its mode, owner and group', async () => {
    const basis = await image('b1.img', 4 * MiB, 1);
    const target = await image('t1.img', 4 * MiB, 2);
    const delta = await makeDelta(basis, target, 'd1');
    const out = join(dir, 'o1.img');
    await writeFile(out, 'old contents');
    await chmod(out, 0o660);
    if (isRoot) await chown(out, NOBODY, NOBODY);
    const before = await stat(out);
    await patchFile(basis, delta, out);
    const after = await stat(out);
    expect(after.mode & 0o7777).toBe(0o660);
    expect([after.uid, after.gid]).toEqual([before.uid, before.gid]);
    if (isRoot) expect([after.uid, after.gid]).toEqual([NOBODY, NOBODY]);
    expect((await readFile(out)).equals(await readFile(target))).toBe(true);
    // Sparse where the target is: 192 KiB of data in 4 MiB.
    expect(after.blocks * 512).toBeLessThan(1 * MiB);
  });

  test('patch onto the basis itself keeps the basis\'s mode and owner', async () => {
    const basis = await image('b2.img', 4 * MiB, 3);
    const target = await image('t2.img', 4 * MiB, 4);
    const delta = await makeDelta(basis, target, 'd2');
    await chmod(basis, 0o640);
    if (isRoot) await chown(basis, NOBODY, 100);
    await patchFile(basis, delta, basis);
    expect(await perm(basis)).toBe(0o640);
    if (isRoot) expect([(await stat(basis)).uid, (await stat(basis)).gid]).toEqual([NOBODY, 100]);
  });

  test('a new output, signature and delta get 0666 less the umask, not 0600', async () => {
    const basis = await image('b3.img', 2 * MiB, 5);
    const target = await image('t3.img', 2 * MiB, 6);
    const delta = await makeDelta(basis, target, 'd3');
    const out = join(dir, 'o3.img');
    await patchFile(basis, delta, out);
    expect(await perm(out)).toBe(newFileMode());
    expect(await perm(join(dir, 'd3.sig'))).toBe(newFileMode());
    expect(await perm(delta)).toBe(newFileMode());
  });

  test('setuid and setgid bits survive the owner being kept (chown clears them; chmod comes after)', async () => {
    if (!isRoot) return;
    const basis = await image('b4.img', 1 * MiB, 7);
    const delta = await makeDelta(basis, basis, 'd4');
    const out = join(dir, 'o4.img');
    await writeFile(out, 'x');
    await chown(out, NOBODY, NOBODY);
    await chmod(out, 0o6750);
    await patchFile(basis, delta, out);
    expect(await perm(out)).toBe(0o6750);
  });

  test('an image created for a first pull or push is 0666 less the umask', async () => {
    const p = join(dir, 'created.img');
    const img = await openOrCreateImage(p, 'r');
    await img.fh.close();
    expect(await perm(p)).toBe(newFileMode());
    expect(await outputMetaFor(join(dir, 'nothing-here.img'))).toEqual({ mode: newFileMode(), owner: null });
  });

  test('a write that fails while in flight fails the commit, and the final path is untouched', async () => {
    const final = join(dir, 'o5.img');
    await writeFile(final, 'keep me');
    const w = await ImageWriter.createTemp(final);
    await w.writeDense(0, Buffer.alloc(1024, 7));
    // Closing the descriptor behind the writer's back makes its next write fail.
    await w.fh.close();
    await w.flush();
    await expect(w.commit(1024)).rejects.toMatchObject({ code: 'ERR_IO' });
    await w.abort();
    expect(await readFile(final, 'utf8')).toBe('keep me');
  });

  test('a background datasync that fails fails the commit, even when the final fsync then succeeds', async () => {
    const final = join(dir, 'o6.img');
    await writeFile(final, 'keep me');
    // Through the page cache: direct writes leave nothing for a background datasync.
    const w = await ImageWriter.createTemp(final, undefined, [], false);
    // A writeback error is reported to one fsync of the descriptor: here the background one, and only once.
    let failed = 0;
    w.fh.datasync = () => {
      failed++;
      return Promise.reject(Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO' }));
    };
    const piece = randomBytes(4 * MiB);
    for (let at = 0; at < 40 * MiB; at += piece.length) await w.write(at, piece);
    await w.flush();
    await new Promise((r) => setTimeout(r, 50));
    expect(failed).toBeGreaterThan(0);
    await expect(w.commit(40 * MiB)).rejects.toMatchObject({ code: 'ERR_IO' });
    await w.abort();
    expect(await readFile(final, 'utf8')).toBe('keep me');
  });

  // Run as nobody with group 100 added: the user cannot keep root as the owner, but can keep the group.
  // (Skipped where nobody cannot run this checkout's CLI, under a 0700 home say.)
  const asNobody = isRoot && spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, CLI, '--version']).status === 0;
  test.skipIf(!asNobody)('a user who cannot keep the owner (not root) still keeps the group, when the user is in it', async () => {
    const shared = join(dir, 'shared');
    await mkdir(shared, { mode: 0o777 });
    await chmod(shared, 0o777);
    await chmod(dir, 0o755);
    const basis = await image('shared/b.img', 4 * MiB, 21);
    const target = await image('shared/t.img', 4 * MiB, 22);
    const delta = await makeDelta(basis, target, 'shared/d');
    for (const f of [basis, target, delta]) await chmod(f, 0o644);
    await chown(basis, 0, 100);
    await chmod(basis, 0o664);
    const r = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--groups=100', process.execPath, CLI, 'patch', basis, delta, basis], { encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const st = await stat(basis);
    expect([st.uid, st.gid, st.mode & 0o7777]).toEqual([NOBODY, 100, 0o664]);
    expect((await readFile(basis)).equals(await readFile(target))).toBe(true);
  });
});

describe('over the network', () => {
  const opts = () => ({ host: '127.0.0.1', port: srv.port, secret: srv.secret });

  test('pull through a temp file over a 0660 nobody:nogroup image keeps mode, owner and group; a pull into a new file gets the default', async () => {
    const primary = await image('primary.img', 4 * MiB, 8);
    await push(primary, { ...opts(), volume: 'rec' });
    const local = join(dir, 'failback.img');
    await writeFile(local, 'stale');
    await chmod(local, 0o660);
    if (isRoot) await chown(local, NOBODY, NOBODY);
    await pull(local, { ...opts(), volume: 'rec', inPlace: false });
    const st = await stat(local);
    expect(st.mode & 0o7777).toBe(0o660);
    if (isRoot) expect([st.uid, st.gid]).toEqual([NOBODY, NOBODY]);
    expect((await readFile(local)).equals(await readFile(primary))).toBe(true);
    expect(st.blocks * 512).toBeLessThan(1 * MiB);

    const brandNew = join(dir, 'brand-new.img');
    await pull(brandNew, { ...opts(), volume: 'rec', inPlace: false });
    expect(await perm(brandNew)).toBe(newFileMode());
    const inPlace = join(dir, 'brand-new-ip.img');
    await pull(inPlace, { ...opts(), volume: 'rec' });
    expect(await perm(inPlace)).toBe(newFileMode());
  });

  test('a push to a server volume that does not exist yet makes it 0666 less the umask; a push over one keeps its owner', async () => {
    const primary = await image('primary2.img', 4 * MiB, 9);
    await push(primary, { ...opts(), volume: 'fresh' });
    expect(await perm(join(dir, 'srv-fresh.img'))).toBe(newFileMode());
    await push(primary, { ...opts(), volume: 'freshInPlace' });
    expect(await perm(join(dir, 'srv-fresh-ip.img'))).toBe(newFileMode());
    await chmod(join(dir, 'srv-fresh.img'), 0o660);
    if (isRoot) await chown(join(dir, 'srv-fresh.img'), NOBODY, NOBODY);
    const changed = await image('primary3.img', 4 * MiB, 10);
    await push(changed, { ...opts(), volume: 'fresh' });
    const st = await stat(join(dir, 'srv-fresh.img'));
    expect(st.mode & 0o7777).toBe(0o660);
    if (isRoot) expect([st.uid, st.gid]).toEqual([NOBODY, NOBODY]);
  });
});
