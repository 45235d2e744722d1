/**
 * An image an in-place patch was killed in is part old, part new until the
 * patch is resumed or rolled back. Read as a source it must be refused
 * (ERR_JOURNAL, naming the fix): a push of it verified at the far side and
 * replaced the replica's good copy; a temp-file patch over it left its
 * journal describing another file, which `recover` then wrote old blocks
 * into. Real files, a real server on 127.0.0.1, the CLI killed at a kill
 * point.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { cliMain } from '../../bench/killpoints.js';
import { deltaFile, patchFile, recoverImage, signatureFile } from '../../src/api/files.js';
import { journalPathFor } from '../../src/io/journal.js';
import { push } from '../../src/net/client.js';
import { closeServers, startServer, type TestServer } from '../helpers/server.js';
import { writePatchPair } from '../helpers/patch-pair.js';

let dir: string;
let srv: TestServer;
const SIZE = 8 << 20;
let oldImg: Buffer;
let newImg: Buffer;

/** `resync patch --in-place BASIS DELTA`, SIGKILLed at the Nth batch written to the image. */
function patchKilledAt(basis: string, delta: string, nth: number): Promise<string | number | null> {
  return new Promise((res) => {
    const c = spawn(process.execPath, [cliMain(), 'patch', '-q', '--in-place', basis, delta], { env: { ...process.env, RESYNC_KILL_AT: `inplace-written:${nth}` }, stdio: 'ignore' });
    c.on('exit', (code, signal) => res(signal ?? code));
  });
}

/** A copy of the old image, killed part way through its in-place patch to the new one. */
async function halfPatched(name: string): Promise<string> {
  const p = join(dir, name);
  await writeFile(p, oldImg);
  expect(await patchKilledAt(p, join(dir, 'd.delta'), 1)).toBe('SIGKILL');
  expect(existsSync(journalPathFor(p))).toBe(true);
  return p;
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'resync-unsettled-'));
  ({ oldImg, newImg } = await writePatchPair(dir, SIZE));
  srv = await startServer({ vol: { path: join(dir, 'replica.img'), writable: true } });
});

afterAll(async () => {
  await closeServers([srv]);
  await rm(dir, { recursive: true, force: true });
});

test('push of a half-patched image is refused, and the replica keeps its copy', async () => {
  const p = await halfPatched('push.img');
  await writeFile(join(dir, 'replica.img'), newImg);
  await expect(push(p, { host: '127.0.0.1', port: srv.port, volume: 'vol', secret: srv.secret })).rejects.toMatchObject({ code: 'ERR_JOURNAL', message: expect.stringMatching(/unfinished in-place patch.*resync recover/) });
  expect((await readFile(join(dir, 'replica.img'))).equals(newImg)).toBe(true);
  // Rolled back, it pushes.
  await recoverImage(p);
  expect((await push(p, { host: '127.0.0.1', port: srv.port, volume: 'vol', secret: srv.secret })).verified).toBe(true);
  expect((await readFile(join(dir, 'replica.img'))).equals(oldImg)).toBe(true);
});

test('signature and delta of a half-patched image are refused', async () => {
  const p = await halfPatched('sd.img');
  await expect(signatureFile(p, join(dir, 'sd.sig'), { sigCache: false })).rejects.toMatchObject({ code: 'ERR_JOURNAL' });
  await expect(deltaFile(join(dir, 'old.sig'), p, join(dir, 'sd.delta'))).rejects.toMatchObject({ code: 'ERR_JOURNAL' });
  expect(existsSync(join(dir, 'sd.sig'))).toBe(false);
  expect(existsSync(join(dir, 'sd.delta'))).toBe(false);
});

test('a temp-file patch with a half-patched image as basis, or as output, is refused; resumed, the image is the new one', async () => {
  const p = await halfPatched('tp.img');
  const before = await readFile(p);
  await expect(patchFile(p, join(dir, 'd.delta'), p)).rejects.toMatchObject({ code: 'ERR_JOURNAL' });
  await expect(patchFile(join(dir, 'old.img'), join(dir, 'd.delta'), p)).rejects.toMatchObject({ code: 'ERR_JOURNAL', message: expect.stringMatching(/before replacing it/) });
  expect((await readFile(p)).equals(before)).toBe(true);
  await patchFile(p, join(dir, 'd.delta'), p, { resume: true });
  expect((await readFile(p)).equals(newImg)).toBe(true);
  expect(existsSync(journalPathFor(p))).toBe(false);
});

test('recover --progress reports the undo and the check of the whole image, and settles it', async () => {
  const p = await halfPatched('progress.img');
  const r = spawnSync(process.execPath, [cliMain(), 'recover', '--progress', p], { encoding: 'utf8' });
  expect(r.status, r.stderr).toBe(0);
  expect(r.stderr).toMatch(/resync recover: undo \d+%/);
  // The check reads the whole image: it ends at its size.
  expect(r.stderr).toMatch(/resync recover: check 100% 8\.0 MiB\/8\.0 MiB/);
  expect((await readFile(p)).equals(oldImg)).toBe(true);
  expect(existsSync(journalPathFor(p))).toBe(false);
});
