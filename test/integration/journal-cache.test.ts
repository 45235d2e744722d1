/**
 * An undo journal lets its pages go from the page cache once they are on
 * disk, all but its last 16 MiB (io/journal.ts). A journal that grew past
 * that is then read back from the disk: by a resume, which undoes the torn
 * tail, and by a recover, which undoes everything. Both must still come out
 * right, and the journal must not stay in memory.
 */
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, stat, statfs, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { cliMain } from '../../bench/killpoints.js';
import { deltaFile, patchFile, recoverImage, signatureFile } from '../../src/api/files.js';
import { nativeHelper } from '../../src/core/native.js';
import { journalPathFor } from '../../src/io/journal.js';
import { releaseAllImageLocks } from '../../src/io/lock.js';
import { randomBytes } from '../../src/testing/workload.js';

const MiB = 1024 * 1024;
/** statfs f_type of tmpfs, whose pages no advice frees. */
const TMPFS_MAGIC = 0x01021994;

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'resync-journal-cache-'));
});
afterAll(async () => {
  releaseAllImageLocks();
  await rm(dir, { recursive: true, force: true });
});

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/** `resync patch --in-place BASIS DELTA`, SIGKILLed at the Nth batch written to the image. */
function patchKilledAt(basis: string, delta: string, nth: number): Promise<string | number | null> {
  return new Promise((res) => {
    const c = spawn(process.execPath, [cliMain(), 'patch', '-q', '--in-place', basis, delta], {
      env: { ...process.env, RESYNC_KILL_AT: `inplace-written:${nth}` },
      stdio: 'ignore',
    });
    c.on('exit', (code, signal) => res(signal ?? code));
  });
}

/** Bytes of `path` in the page cache (fincore), or null where it cannot be told. */
async function resident(path: string): Promise<number | null> {
  if (spawnSync('fincore', ['--version']).status !== 0 || (await statfs(path)).type === TMPFS_MAGIC || !nativeHelper()?.dropCache) return null;
  return Number(spawnSync('fincore', ['--bytes', '--noheadings', '--output', 'RES', path], { encoding: 'utf8' }).stdout.trim());
}

describe('a journal larger than what it keeps in the page cache', () => {
  test('killed with 30 MiB and more journaled: the journal is mostly out of memory, and recover, then resume, give the right images', { timeout: 120_000 }, async () => {
    expect(existsSync(cliMain()), `${cliMain()} is missing: run npx tsc -p tsconfig.json first`).toBe(true);
    // Every byte changes: each 2 MiB batch journals 2 MiB of old bytes.
    const size = 48 * MiB;
    const original = randomBytes(71, size);
    const target = randomBytes(72, size);
    const basis = join(dir, 'basis.img');
    const targetPath = join(dir, 'target.img');
    const sig = join(dir, 'basis.sig');
    const delta = join(dir, 'update.delta');
    await writeFile(basis, original);
    await writeFile(targetPath, target);
    await signatureFile(basis, sig, { sigCache: false });
    await deltaFile(sig, targetPath, delta);
    const journal = journalPathFor(basis);

    expect(await patchKilledAt(basis, delta, 16)).toBe('SIGKILL');
    const journaled = (await stat(journal)).size;
    expect(journaled).toBeGreaterThan(30 * MiB);
    const inMemory = await resident(journal);
    // The last 16 MiB stay, and the batches written since the last sync; not the rest.
    if (inMemory !== null) expect(inMemory).toBeLessThan(journaled - 8 * MiB);

    await recoverImage(basis);
    expect(existsSync(journal)).toBe(false);
    expect(sha(await readFile(basis))).toBe(sha(original));

    expect(await patchKilledAt(basis, delta, 18)).toBe('SIGKILL');
    expect((await stat(journal)).size).toBeGreaterThan(30 * MiB);
    await patchFile(basis, delta, basis, { resume: true });
    expect(existsSync(journal)).toBe(false);
    expect(sha(await readFile(basis))).toBe(sha(target));
  });
});
