/**
 * One image, several names (a hard link, a symlink, two volume names for one
 * file). The lock is the file's, but a journal is found by name: a patch
 * killed under one name left the file part old, part new, and under another
 * name it was pushed, signed and pulled as if whole ("verified"), and a
 * patch there followed by `recover` under the first name wrote old blocks
 * into a good image. Every name must see the journal: sources refuse, and
 * writers and `recover` settle or continue that same journal. Real files,
 * the CLI killed at a kill point, real servers on 127.0.0.1.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { copyFile, link, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { cliMain } from '../../bench/killpoints.js';
import { deltaFile, patchFile, recoverImage, signatureFile } from '../../src/api/files.js';
import { journalPathFor } from '../../src/io/journal.js';
import { lockImage } from '../../src/io/lock.js';
import { verifyFiles } from '../../src/api/verify.js';
import { pull, push } from '../../src/net/client.js';
import { listeningPort } from '../helpers/listening.js';
import { writePatchPair } from '../helpers/patch-pair.js';

const SIZE = 8 << 20;
let dir: string;
let oldImg: Buffer;
let newImg: Buffer;
const children: ChildProcess[] = [];

/** `resync patch --in-place IMAGE DELTA`, SIGKILLed at its first batch written. */
function killedPatch(image: string, delta: string): string | number | null {
  const r = spawnSync(process.execPath, [cliMain(), 'patch', '-q', '--in-place', image, delta], { env: { ...process.env, RESYNC_KILL_AT: 'inplace-written:1' } });
  return r.signal ?? r.status;
}

/** A directory holding `vm.img` (the old image), a hard link `vm-hard.img` and a symlink `vm-sym.img`. */
async function names(sub: string): Promise<{ real: string; hard: string; sym: string }> {
  const d = join(dir, sub);
  await mkdir(d);
  const real = join(d, 'vm.img');
  await writeFile(real, oldImg);
  await link(real, join(d, 'vm-hard.img'));
  await symlink('vm.img', join(d, 'vm-sym.img'));
  return { real, hard: join(d, 'vm-hard.img'), sym: join(d, 'vm-sym.img') };
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'resync-alias-'));
  ({ oldImg, newImg } = await writePatchPair(dir, SIZE));
});

afterAll(async () => {
  for (const c of children) c.kill('SIGKILL');
  await rm(dir, { recursive: true, force: true });
});

describe('a patch killed under one name of a local image', () => {
  test('every other name is refused as a source, and a plain in-place patch under it too', async () => {
    const n = await names('sources');
    expect(killedPatch(n.sym, join(dir, 'd.delta'))).toBe('SIGKILL');
    expect(existsSync(journalPathFor(n.sym))).toBe(true);
    for (const name of [n.real, n.hard]) {
      await expect(signatureFile(name, join(dir, 'x.sig'), { sigCache: false })).rejects.toMatchObject({ code: 'ERR_JOURNAL', message: expect.stringContaining('vm-sym.img.resync-journal') });
      await expect(deltaFile(join(dir, 'old.sig'), name, join(dir, 'x.delta'))).rejects.toMatchObject({ code: 'ERR_JOURNAL' });
      await expect(patchFile(name, join(dir, 'd.delta'), name, { inPlace: true })).rejects.toMatchObject({ code: 'ERR_JOURNAL' });
    }
    expect(existsSync(join(dir, 'x.sig'))).toBe(false);
  });

  test('while a session holds the image (its journal live, not left behind), a source is told it is in use (ERR_LOCKED), not to recover it', async () => {
    const n = await names('live');
    expect(killedPatch(n.real, join(dir, 'd.delta'))).toBe('SIGKILL');
    // Standing in for the session that writes it now.
    const held = await lockImage(n.real, 'write');
    try {
      await expect(deltaFile(join(dir, 'old.sig'), n.hard, join(dir, 'y.delta'))).rejects.toMatchObject({ code: 'ERR_LOCKED', message: expect.stringContaining('in use by another resync session') });
      await expect(verifyFiles(n.real, join(dir, 'new.img'))).rejects.toMatchObject({ code: 'ERR_LOCKED' });
    } finally {
      await held.release();
    }
    // Nobody holds it: the journal was left behind, and the advice is to settle it.
    await expect(verifyFiles(n.real, join(dir, 'new.img'))).rejects.toMatchObject({ code: 'ERR_JOURNAL', message: expect.stringContaining('resync recover') });
  });

  test('--resume under another name finishes the same patch, through the same journal', async () => {
    const n = await names('resume');
    expect(killedPatch(n.hard, join(dir, 'd.delta'))).toBe('SIGKILL');
    await patchFile(n.real, join(dir, 'd.delta'), n.real, { resume: true });
    expect((await readFile(n.real)).equals(newImg)).toBe(true);
    expect(existsSync(journalPathFor(n.hard))).toBe(false);
    expect(existsSync(journalPathFor(n.real))).toBe(false);
  });

  test('recover under another name rolls the image back and removes that journal', async () => {
    const n = await names('recover');
    expect(killedPatch(n.sym, join(dir, 'd.delta'))).toBe('SIGKILL');
    expect(await recoverImage(n.hard)).toBe('rolled-back');
    expect((await readFile(n.real)).equals(oldImg)).toBe(true);
    expect(existsSync(journalPathFor(n.sym))).toBe(false);
    // Whole again: it may be read.
    await signatureFile(n.real, join(dir, 'recover.sig'), { sigCache: false });
  });

  test('journals under two names at once (left by older versions) are refused, not guessed between', async () => {
    const n = await names('two');
    expect(killedPatch(n.sym, join(dir, 'd.delta'))).toBe('SIGKILL');
    // The same wreck's journal under a second name, as an older resync could leave it.
    await copyFile(journalPathFor(n.sym), journalPathFor(n.hard));
    await expect(recoverImage(n.real)).rejects.toMatchObject({ code: 'ERR_JOURNAL', message: expect.stringMatching(/more than one of its names/) });
    await expect(patchFile(n.real, join(dir, 'd.delta'), n.real, { resume: true })).rejects.toMatchObject({ code: 'ERR_JOURNAL' });
  });
});

describe('two volume names for one file on a server', () => {
  // A hard link in another directory is found because it is another volume's: the server looks in its volumes' directories.
  test.each([
    ['in the same directory', 'server', '.'],
    ['in another directory', 'server-apart', 'other'],
  ])('a push killed under one name (a hard link %s): a pull under the other is refused; a push under the other completes the image', { timeout: 60_000 }, async (_where, sub, apart) => {
    const d = join(dir, sub);
    await mkdir(join(d, apart), { recursive: true });
    const x = join(d, 'x.img');
    await writeFile(x, oldImg);
    const xb = join(d, apart, 'xb.img');
    await link(x, xb);
    const secretFile = join(d, 'secret');
    await writeFile(secretFile, randomBytes(24).toString('base64'), { mode: 0o600 });
    const serve = async (env: Record<string, string>): Promise<number> => {
      const child = spawn(process.execPath, [cliMain(), 'serve', '--listen', '127.0.0.1:0', '--volume', `x=${x}:rw`, '--volume', `xb=${xb}:rw`, '--secret-file', secretFile], {
        stdio: ['ignore', 'pipe', 'pipe'],
        env: { ...process.env, ...env },
      });
      children.push(child);
      return (await listeningPort(child)).port;
    };
    const first = await serve({ RESYNC_KILL_AT: 'inplace-written:1' });
    const secret = await readFile(secretFile);
    await expect(push(join(dir, 'new.img'), { host: '127.0.0.1', port: first, volume: 'xb', secret })).rejects.toMatchObject({ code: 'ERR_CONNECTION' });
    expect(existsSync(journalPathFor(xb))).toBe(true);

    const port = await serve({});
    const local = join(d, 'local.img');
    await writeFile(local, oldImg);
    await expect(pull(local, { host: '127.0.0.1', port, volume: 'x', secret })).rejects.toMatchObject({ code: 'ERR_BUSY' });
    expect((await readFile(local)).equals(oldImg)).toBe(true);
    const r = await push(join(dir, 'new.img'), { host: '127.0.0.1', port, volume: 'x', secret });
    expect(r.verified).toBe(true);
    expect((await readFile(x)).equals(newImg)).toBe(true);
    expect(existsSync(journalPathFor(xb))).toBe(false);
    expect(existsSync(journalPathFor(x))).toBe(false);
  });
});
