/** Telling ssh remotes from TCP ones, splitting --rsh, and the --allow path check of `serve --stdio`. */
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { realpathSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { parseSshRemote, splitCommand } from '../../src/net/ssh.js';
import { realAllowDirs, resolveRequested } from '../../src/net/allow.js';
import { isSyncError } from '../../src/core/errors.js';

describe('parseSshRemote', () => {
  test('a port number before the slash stays TCP', () => {
    expect(parseSshRemote('dr:7873/vm1')).toBeNull();
    expect(parseSshRemote('[::1]:7873/vm1')).toBeNull();
    expect(parseSshRemote('10.0.0.2:1/v')).toBeNull();
  });
  test('host:/abs, user@host:path and [v6]:/path are ssh', () => {
    expect(parseSshRemote('dr:/srv/images/vm1.img')).toEqual({ host: 'dr', path: '/srv/images/vm1.img' });
    expect(parseSshRemote('root@dr:vm1.img')).toEqual({ host: 'root@dr', path: 'vm1.img' });
    expect(parseSshRemote('root@dr:/a:b.img')).toEqual({ host: 'root@dr', path: '/a:b.img' });
    expect(parseSshRemote('[::1]:/srv/x.img')).toEqual({ host: '::1', path: '/srv/x.img' });
  });
  test('a URI (an NBD export) is not an ssh remote', () => {
    expect(parseSshRemote('nbd+unix:///vm1?socket=/run/vm1.sock')).toBeNull();
    expect(parseSshRemote('nbd://127.0.0.1:10809/vm1')).toBeNull();
    expect(parseSshRemote('nbds://dr/vm1')).toBeNull();
  });
  test('local paths are not remotes', () => {
    expect(parseSshRemote('/srv/images/vm1.img')).toBeNull();
    expect(parseSshRemote('./dr:/x')).toBeNull();
    expect(parseSshRemote('vm1.img')).toBeNull();
  });
  test('no path, a host that looks like an option, or a path too long for the Open message are refused', () => {
    expect(() => parseSshRemote('dr:')).toThrow(/names no path/);
    expect(() => parseSshRemote('-oProxyCommand=x:/p')).toThrow(/may not start with "-"/);
    expect(() => parseSshRemote(`dr:/${'a'.repeat(300)}`)).toThrow(/at most 255/);
  });
  test('HOST:PORT without a volume is refused with the two ways to say it, not taken for a file over ssh', () => {
    expect(() => parseSshRemote('127.0.0.1:7901')).toThrow(/HOST:PORT\/VOLUME .* HOST:\.\/7901/);
    expect(parseSshRemote('dr:./7901')).toEqual({ host: 'dr', path: './7901' });
  });
});

describe('splitCommand', () => {
  test('words, quotes and backslashes as a shell splits them', () => {
    expect(splitCommand('ssh -p 2222 -i key')).toEqual(['ssh', '-p', '2222', '-i', 'key']);
    expect(splitCommand(`ssh -o 'ProxyCommand=nc %h %p' -i "my key" a\\ b`)).toEqual(['ssh', '-o', 'ProxyCommand=nc %h %p', '-i', 'my key', 'a b']);
    expect(splitCommand(`x ''`)).toEqual(['x', '']);
  });
  test('unterminated quotes and an empty command are refused', () => {
    expect(() => splitCommand(`ssh 'x`)).toThrow(/unterminated quote/);
    expect(() => splitCommand('   ')).toThrow(/--rsh is empty/);
  });
});

describe('resolveRequested (--allow)', () => {
  let dir: string;
  let allowed: string;
  beforeAll(async () => {
    dir = realpathSync(await mkdtemp(join(tmpdir(), 'resync-allow-')));
    allowed = join(dir, 'images');
    await mkdir(allowed);
    await mkdir(join(dir, 'images-other'));
    await writeFile(join(allowed, 'vm.img'), 'x');
    await writeFile(join(dir, 'outside.img'), 'y');
    await symlink(join(dir, 'outside.img'), join(allowed, 'out-link.img'));
    await symlink(join(dir, 'images-other'), join(allowed, 'dirlink'));
  });
  afterAll(() => rm(dir, { recursive: true, force: true }));

  const code = async (p: Promise<unknown>): Promise<string> => p.then(() => 'ok', (e: unknown) => (isSyncError(e) ? e.code : String(e)));

  test('paths under the directory are served, relative ones from it, new files through their directory', async () => {
    const access = { allow: await realAllowDirs([allowed]), readOnly: false };
    expect((await resolveRequested(join(allowed, 'vm.img'), 'push', access)).path).toBe(join(allowed, 'vm.img'));
    expect((await resolveRequested('vm.img', 'pull', access)).path).toBe(join(allowed, 'vm.img'));
    expect((await resolveRequested(join(allowed, 'sub', '..', 'new.img'), 'push', access)).path).toBe(join(allowed, 'new.img'));
  });

  test('.., symbolic links out, a sibling with the same prefix and the directory itself are refused', async () => {
    const access = { allow: await realAllowDirs([allowed]), readOnly: false };
    for (const p of ['../outside.img', join(allowed, '..', 'outside.img'), join(dir, 'outside.img'), 'out-link.img', 'dirlink/new.img', join(dir, 'images-other', 'x.img'), allowed, '.']) {
      expect(await code(resolveRequested(p, 'pull', access)), p).toBe('ERR_PERMISSION');
    }
    expect(await code(resolveRequested('nodir/x.img', 'push', access))).toBe('ERR_NOT_FOUND');
  });

  test('a missing directory outside is refused as outside, not reported missing (that would tell what exists there)', async () => {
    const access = { allow: await realAllowDirs([allowed]), readOnly: false };
    for (const p of [join(dir, 'nonexistent', 'x.img'), '/nonexistent-resync-dir/x.img', '../nonexistent/x.img']) {
      expect(await code(resolveRequested(p, 'push', access)), p).toBe('ERR_PERMISSION');
    }
    // Without --allow every path is served, and a missing directory is said to be missing.
    expect(await code(resolveRequested(join(dir, 'nonexistent', 'x.img'), 'push', { allow: null, readOnly: false }))).toBe('ERR_NOT_FOUND');
  });

  test('--read-only refuses pushes only', async () => {
    const access = { allow: await realAllowDirs([allowed]), readOnly: true };
    expect(await code(resolveRequested('vm.img', 'push', access))).toBe('ERR_PERMISSION');
    expect(await code(resolveRequested('vm.img', 'pull', access))).toBe('ok');
  });

  test('an --allow directory that does not exist is a parameter error', async () => {
    expect(await code(realAllowDirs([join(dir, 'missing')]))).toBe('ERR_PARAM');
  });
});
