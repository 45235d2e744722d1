/**
 * The package's main export end to end, in one process on 127.0.0.1: serve,
 * push, pull, verify and dry runs; the file verbs; the in-memory verbs; typed
 * errors. The runnable example in docs/api.md is executed against the build
 * (npx tsc -p tsconfig.json) exactly as printed there.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import * as api from '../../src/index.js';
import {
  applyDelta,
  deltaFile,
  diff,
  dryRunDelta,
  dryRunPull,
  dryRunPush,
  isSyncError,
  patchFile,
  pull,
  push,
  recoverImage,
  serve,
  signatureFile,
  signatureOf,
  SyncError,
  verifyFiles,
  verifyRemote,
  type ClientOptions,
  type ServeHandle,
} from '../../src/index.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const DIST_INDEX = join(ROOT, 'dist/src/index.js');
const MiB = 1024 * 1024;

let dir: string;
let handle: ServeHandle;
let client: ClientOptions;
const secret = randomBytes(32);
const p = (name: string): string => join(dir, name);

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'resync-api-'));
  handle = await serve({
    port: 0,
    secret,
    volumes: { replica: { path: p('replica.img'), writable: true }, ro: { path: p('ro.img'), writable: false } },
    handshakeTimeoutMs: 5_000,
  });
  client = { host: '127.0.0.1', port: handle.port, secret, volume: 'replica' };
});

afterAll(async () => {
  await handle?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('the main export', () => {
  test('offers the documented functions and error classes', () => {
    for (const name of [
      'signatureFile', 'deltaFile', 'patchFile', 'recoverImage', 'push', 'pull', 'recoverRemote', 'serve', 'serveConfigFile',
      'verifyFiles', 'verifyRemote', 'dryRunPush', 'dryRunPull', 'dryRunDelta', 'signatureOf', 'diff', 'applyDelta', 'isSyncError',
    ]) {
      expect(typeof (api as Record<string, unknown>)[name], name).toBe('function');
    }
    for (const name of ['SyncError', 'ParamError', 'CorruptInputError', 'VerifyError', 'BasisMismatchError', 'ProtocolError', 'JournalError', 'UnexpectedMessageError', 'FrameTooLargeError', 'NbdError', 'NbdTlsError']) {
      const C = (api as Record<string, unknown>)[name] as new (...a: never[]) => unknown;
      expect(C.prototype instanceof SyncError || C === SyncError, name).toBe(true);
    }
  });

  test('serve + push + verify + dry run + pull, all in process', async () => {
    const primary = randomBytes(6 * MiB);
    await writeFile(p('primary.img'), primary);

    const first = await push(p('primary.img'), client);
    expect(first).toMatchObject({ verified: true, imageSize: 6 * MiB, literalBytes: 6 * MiB });
    expect((await readFile(p('replica.img'))).equals(primary)).toBe(true);

    randomBytes(8192).copy(primary, 2 * MiB);
    await writeFile(p('primary.img'), primary);
    const dry = await dryRunPush(p('primary.img'), client);
    expect(dry.upToDate).toBe(false);
    expect((await verifyRemote(p('primary.img'), client)).ranges).toEqual([{ offset: 2 * MiB, length: 8192 }]);
    const second = await push(p('primary.img'), client);
    expect(second.literalBytes).toBe(dry.literalBytes);
    expect(second.literalBytes).toBeLessThanOrEqual(8192 + 2 * second.blockSize);
    expect(await verifyRemote(p('primary.img'), client)).toMatchObject({ identical: true, ranges: [] });

    // Failback onto a damaged copy.
    const damaged = Buffer.from(primary);
    damaged.fill(0, MiB, MiB + 100_000);
    await writeFile(p('local.img'), damaged);
    const est = await dryRunPull(p('local.img'), client);
    expect(est.estimated).toBe(true);
    const back = await pull(p('local.img'), client);
    expect(back.verified).toBe(true);
    expect(back.literalBytes).toBeLessThanOrEqual(est.literalBytes);
    expect((await readFile(p('local.img'))).equals(primary)).toBe(true);
    expect(handle.server.sessionsDone).toBeGreaterThanOrEqual(6);
  });

  test('file verbs: signature, delta (and its dry run), in-place patch, recover, verify', async () => {
    const basis = randomBytes(3 * MiB);
    const target = Buffer.concat([basis.subarray(0, MiB), randomBytes(5000), basis.subarray(MiB)]);
    await writeFile(p('f-basis.img'), basis);
    await writeFile(p('f-target.img'), target);
    const sig = await signatureFile(p('f-basis.img'), p('f.sig'), { blockSize: 4096 });
    expect(sig.blockSize).toBe(4096);
    const dry = await dryRunDelta(p('f.sig'), p('f-target.img'));
    const d = await deltaFile(p('f.sig'), p('f-target.img'), p('f.delta'));
    expect(d.bytesOut).toBe(dry.deltaBytes);
    expect(d.literalBytes).toBeLessThan(5000 + 4096);
    await patchFile(p('f-basis.img'), p('f.delta'), p('f-basis.img'), { inPlace: true });
    expect(await recoverImage(p('f-basis.img'))).toBe('nothing');
    expect((await verifyFiles(p('f-basis.img'), p('f-target.img'))).identical).toBe(true);
  });

  test('in-memory verbs', () => {
    const basis = randomBytes(50_000);
    const target = Buffer.concat([Buffer.from('header'), basis.subarray(10_000)]);
    const ops = diff(signatureOf(basis, { blockSize: 512 }), target);
    expect(ops.some((o) => o.kind === 'copy')).toBe(true);
    expect(Buffer.from(applyDelta(basis, ops, target.length)).equals(target)).toBe(true);
  });

  test('errors carry stable codes', async () => {
    const e = await push(p('primary.img'), { ...client, volume: 'ro' }).catch((x: unknown) => x);
    expect(isSyncError(e)).toBe(true);
    expect(e).toMatchObject({ code: 'ERR_PERMISSION' });
    await expect(serve({ secret: Buffer.from('short'), volumes: {} })).rejects.toMatchObject({ code: 'ERR_PARAM' });
    await expect(verifyFiles(p('none.img'), p('primary.img'))).rejects.toBeInstanceOf(SyncError);
  });
});

describe('bad options from a caller', () => {
  // Before these were checked up front, each was thrown inside a socket or timer callback: an
  // uncaught exception that ended the caller's whole process (this test runner with it).
  test.each([
    ['bwlimit -1', { bwlimit: -1 }],
    ['bwlimit Infinity', { bwlimit: Infinity }],
    ['blockSize 8 (below the 16 bytes a signature allows)', { blockSize: 8 }],
    ['bwlimit "fast"', { bwlimit: 'fast' }],
    ['bwlimit NaN', { bwlimit: NaN }],
    ['idleTimeoutMs -1', { idleTimeoutMs: -1 }],
    ['idleTimeoutMs NaN', { idleTimeoutMs: NaN }],
    ['port "x"', { port: 'x' }],
    ['no secret', { secret: undefined }],
    ['compressChoice "lz4"', { compress: true, compressChoice: 'lz4' }],
    ['compressLevel 999', { compress: true, compressLevel: 999 }],
    ['onProgress 5', { onProgress: 5 }],
  ])('push with %s: rejects with ERR_PARAM, nothing written', async (_what, bad) => {
    await writeFile(p('opt.img'), randomBytes(64 * 1024));
    const before = existsSync(p('replica.img')) ? await readFile(p('replica.img')) : null;
    await expect(push(p('opt.img'), { ...client, ...(bad as Partial<ClientOptions>) })).rejects.toMatchObject({ code: 'ERR_PARAM' });
    if (before) expect((await readFile(p('replica.img'))).equals(before)).toBe(true);
  });

  test('bwlimit 0 is no limit, as --bwlimit 0 is (not refused)', async () => {
    await writeFile(p('opt0.img'), randomBytes(64 * 1024));
    expect(await push(p('opt0.img'), { ...client, bwlimit: 0 })).toMatchObject({ verified: true });
  });

  test.each([
    ['handshakeTimeoutMs -5', { handshakeTimeoutMs: -5 }],
    ['idleTimeoutMs -1', { idleTimeoutMs: -1 }],
    ['maxSessions -1', { maxSessions: -1 }],
    ['port -1', { port: -1 }],
    ['a secret that is not bytes', { secret: 'sekrit-sekrit-sekrit' }],
  ])('serve with %s: rejects with ERR_PARAM before listening', async (_what, bad) => {
    await expect(serve({ port: 0, secret, volumes: {}, ...(bad as object) })).rejects.toMatchObject({ code: 'ERR_PARAM' });
  });
});

describe.runIf(existsSync(DIST_INDEX))('docs/api.md example', () => {
  test('runs as printed and reports what the page says', async () => {
    const md = await readFile(join(ROOT, 'docs/api.md'), 'utf8');
    const m = /```js example\.mjs\n([\s\S]*?)```/.exec(md);
    expect(m, 'docs/api.md has no ```js example.mjs block').not.toBeNull();
    const code = m![1]!.replace("from 'resync'", `from ${JSON.stringify(pathToFileURL(DIST_INDEX).href)}`);
    const file = p('example.mjs');
    await writeFile(file, code);
    const out = await new Promise<string>((resolve, reject) => {
      execFile(process.execPath, [file], { timeout: 30_000 }, (err, stdout, stderr) => (err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout)));
    });
    expect(out).toMatch(/^first push: 8388608 literal bytes, verified: true$/m);
    expect(out).toMatch(/^second push: 65536 literal bytes of 8388608$/m);
    expect(out).toMatch(/^identical after push: true$/m);
    expect(out).toMatch(/^pull: \d+ literal bytes, primary restored: true$/m);
    expect(out).toMatch(/^delta of \d+ bytes; replica identical: true$/m);
    expect(out).toMatch(/^in memory: \d+ ops, round trip ok: true$/m);
    expect(out).toMatch(/^unknown volume: ERR_NOT_FOUND$/m);
  });
});
