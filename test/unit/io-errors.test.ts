/**
 * What an operating-system error says to an operator: a file-size limit is
 * not a full disk, and a patch into a directory that is not there names the
 * directory and the output, not the hidden temp file it was about to make.
 */
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { ioError } from '../../src/io/errors.js';
import { ImageWriter } from '../../src/io/output.js';
import type { SyncError } from '../../src/core/errors.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'resync-ioerr-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const errno = (code: string): NodeJS.ErrnoException => Object.assign(new Error(code), { code });

test('EFBIG is a file too large, not a full disk (same code and exit status)', () => {
  const e = ioError(errno('EFBIG'), 'write', '/srv/out.img');
  expect(e.code).toBe('ERR_NO_SPACE');
  expect(e.message).toContain('file too large');
  expect(e.message).not.toContain('no space left');
  expect(ioError(errno('ENOSPC'), 'write', '/srv/out.img').message).toBe('no space left: cannot write /srv/out.img (ENOSPC)');
});

test('a file made in a directory that does not exist names the directory', () => {
  const e = ioError(errno('ENOENT'), 'create', join(dir, 'gone', 'x.img'));
  expect(e.code).toBe('ERR_IO');
  expect(e.message).toBe(`cannot create ${join(dir, 'gone', 'x.img')}: the directory ${join(dir, 'gone')} does not exist`);
  // A directory that is there: the plain reason.
  expect(ioError(errno('ENOENT'), 'open', join(dir, 'x.img')).message).toBe(`cannot open ${join(dir, 'x.img')}: no such file`);
});

test("an output whose directory is missing is reported by the output's name, not its temp file's", async () => {
  const out = join(dir, 'missing', 'out.img');
  const e = (await ImageWriter.createTemp(out).then(
    () => null,
    (x: unknown) => x,
  )) as SyncError | null;
  expect(e?.code).toBe('ERR_IO');
  expect(e?.message).toBe(`cannot create ${out}: the directory ${join(dir, 'missing')} does not exist`);
  expect(await readdir(dir)).toEqual([]);
});
