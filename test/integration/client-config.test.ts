/**
 * The client config (RESYNC_CONFIG): named remotes for push and pull against
 * a real server on 127.0.0.1, flags over the config, and the one-line
 * refusals for a config that is wrong.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { chmod, chown, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { applyScenario, generateImage } from '../../src/testing/workload.js';
import { startServer, type TestServer } from '../helpers/server.js';
import { runCli, type CliRun } from '../helpers/cli.js';
import { clientConfigPath, parseNamedRemote } from '../../src/cli/client-config.js';

const MAIN = resolve('dist/src/cli/main.js');

let dir: string;
let srv: TestServer;
let basis: Buffer;
let target: Buffer;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'resync-ccfg-'));
  srv = await startServer({ vm1: { path: join(dir, 'vm1.img'), writable: true }, vm2: { path: join(dir, 'vm2.img'), writable: true } });
  basis = generateImage(2 << 20, 3);
  target = applyScenario(basis, 'mixed', 4);
  target.fill(0x61, 256 << 10, 768 << 10);
  await writeFile(join(dir, 'primary.img'), target);
  // The secret beside the config, named relative to it.
  await writeFile(join(dir, 'dr.secret'), srv.secret, { mode: 0o600 });
});
afterAll(async () => {
  await srv.server.close();
  await rm(dir, { recursive: true, force: true });
  await rm(srv.dir, { recursive: true, force: true });
});

async function withConfig(config: unknown, args: string[]): Promise<CliRun> {
  const file = join(dir, 'config.json');
  await writeFile(file, typeof config === 'string' ? config : JSON.stringify(config));
  return runCli(MAIN, args, { env: { RESYNC_CONFIG: file, RESYNC_SECRET_FILE: '' } });
}

const drSite = (extra: Record<string, unknown> = {}) => ({ remotes: { 'dr-site': { host: '127.0.0.1', port: srv.port, secretFile: 'dr.secret', ...extra } } });

/** The one error line of a failed run. */
function errorLine(r: CliRun): string {
  expect(r.code).toBe(2);
  const lines = r.stderr.trim().split('\n');
  return lines[lines.length - 1]!;
}

describe('named remotes', () => {
  test('push and pull by @NAME/VOLUME, with the compression the remote sets', async () => {
    await writeFile(join(dir, 'vm1.img'), basis);
    const p = await withConfig(drSite({ compressChoice: 'deflate', compressLevel: 6 }), ['push', '--json', join(dir, 'primary.img'), '@dr-site/vm1']);
    expect(p.code, p.stderr).toBe(0);
    expect(JSON.parse(p.stdout)).toMatchObject({ ok: true, verified: true, compression: 'deflate:6' });
    expect((await readFile(join(dir, 'vm1.img'))).equals(target)).toBe(true);
    await writeFile(join(dir, 'local.img'), basis);
    const q = await withConfig(drSite({ compress: true }), ['pull', '--json', '@dr-site/vm1', join(dir, 'local.img')]);
    expect(q.code, q.stderr).toBe(0);
    expect(JSON.parse(q.stdout)).toMatchObject({ ok: true, compression: 'zstd:3' });
    expect((await readFile(join(dir, 'local.img'))).equals(target)).toBe(true);
    // verify takes a named remote too: identical, then different (exit 10)
    const same = await withConfig(drSite(), ['verify', '--json', join(dir, 'local.img'), '@dr-site/vm1']);
    expect(same.code, same.stderr).toBe(0);
    expect(JSON.parse(same.stdout)).toMatchObject({ ok: true, identical: true, remote: '@dr-site/vm1' });
    const diff = await withConfig(drSite(), ['verify', '--json', join(dir, 'primary.img'), '@dr-site/vm1']);
    await writeFile(join(dir, 'other.img'), basis);
    const other = await withConfig(drSite(), ['verify', '--json', join(dir, 'other.img'), '@dr-site/vm1']);
    expect(diff.code).toBe(0);
    expect(other.code).toBe(10);
    expect(JSON.parse(other.stdout)).toMatchObject({ identical: false });
  });

  test('a bare @NAME takes the remote\'s volume; flags override the config', async () => {
    await writeFile(join(dir, 'vm2.img'), basis);
    const cfg = drSite({ volume: 'vm2', compress: true, compressChoice: 'zstd', secretFile: 'missing.secret' });
    // --secret-file replaces the remote's (missing) secret file, --no-compress its compression
    const r = await withConfig(cfg, ['push', '--json', '--no-compress', '--secret-file', srv.secretFile, join(dir, 'primary.img'), '@dr-site']);
    expect(r.code, r.stderr).toBe(0);
    const j = JSON.parse(r.stdout) as Record<string, unknown>;
    expect(j.compression).toBeUndefined();
    expect((await readFile(join(dir, 'vm2.img'))).equals(target)).toBe(true);
    const d = await withConfig(cfg, ['push', '--json', '--compress-choice', 'deflate', '--secret-file', srv.secretFile, join(dir, 'primary.img'), '@dr-site']);
    expect(JSON.parse(d.stdout)).toMatchObject({ ok: true, compression: 'deflate:1' });
    // a wrong --timeout flag is still refused with the remote's timeout set
    const t = await withConfig(drSite({ timeout: 5 }), ['push', '--timeout', 'soon', join(dir, 'primary.img'), '@dr-site/vm2']);
    expect(errorLine(t)).toMatch(/--timeout/);
  });
});

describe('a wrong config or remote is one clear line and exit 2', () => {
  const push = (cfg: unknown, remote = '@dr-site/vm1') => withConfig(cfg, ['push', join(dir, 'primary.img'), remote]);

  test('an unknown key, with the key it resembles', async () => {
    expect(errorLine(await push(drSite({ hots: 'x' })))).toContain('remotes.dr-site.hots: unknown key (did you mean "host"?)');
    expect(errorLine(await push({ ...drSite(), remote: {} }))).toContain('remote: unknown key (did you mean "remotes"?)');
  });

  test('a value of the wrong type', async () => {
    expect(errorLine(await push(drSite({ port: '7873' })))).toContain('remotes.dr-site.port: must be a number, got "7873"');
    expect(errorLine(await push(drSite({ compressChoice: 'lz4' })))).toContain('remotes.dr-site.compressChoice: must be "zstd" or "deflate"');
    expect(errorLine(await push(drSite({ compressChoice: 'deflate', compressLevel: 12 })))).toContain('remotes.dr-site.compressLevel: must be 1..9 for deflate');
    expect(errorLine(await push('{"remotes": '))).toContain('not valid JSON');
  });

  test('ssh and TCP settings mixed, or neither host nor ssh', async () => {
    expect(errorLine(await push({ remotes: { 'dr-site': { ssh: 'root@dr', dir: '/srv', secretFile: 'x' } } }))).toContain('remotes.dr-site.secretFile: does not apply to an ssh remote');
    expect(errorLine(await push({ remotes: { 'dr-site': { port: 7873 } } }))).toContain('remotes.dr-site.host: is required');
    expect(errorLine(await push({ remotes: { 'dr-site': { ssh: 'root@dr' } } }))).toContain('remotes.dr-site.dir: is required for an ssh remote');
    // "tls": false and a CA for TLS contradict each other (the CA turned TLS on).
    expect(errorLine(await push(drSite({ tls: false, tlsCa: 'ca.pem' })))).toContain('remotes.dr-site.tlsCa: names a CA for TLS, which "tls": false turns off');
  });

  test('a remote the config does not have, a remote without a default volume, no config at all', async () => {
    expect(errorLine(await push(drSite(), '@dr/vm1'))).toBe('resync push: error ERR_PARAM: no remote named "dr" in ' + join(dir, 'config.json') + ' (it has @dr-site)');
    expect(errorLine(await push(drSite(), '@dr-site'))).toContain('remote @dr-site has no default volume: write @dr-site/VOLUME');
    expect(errorLine(await push(drSite(), '@dr-site/../etc'))).toContain('is not a volume name');
    const none = await runCli(MAIN, ['push', join(dir, 'primary.img'), '@dr-site/vm1'], { env: { RESYNC_CONFIG: join(dir, 'nowhere.json') } });
    expect(errorLine(none)).toContain(`no client config at ${join(dir, 'nowhere.json')}`);
  });

  test('a secret file other users can read is refused, and nothing is sent', async () => {
    await writeFile(join(dir, 'vm1.img'), basis);
    await chmod(join(dir, 'dr.secret'), 0o644);
    try {
      expect(errorLine(await push(drSite()))).toBe(`resync push: error ERR_PARAM: secret file ${join(dir, 'dr.secret')} (named by the client config) is readable or writable by other users (mode 644); chmod 600 it`);
      expect((await readFile(join(dir, 'vm1.img'))).equals(basis)).toBe(true);
    } finally {
      await chmod(join(dir, 'dr.secret'), 0o600);
    }
  });
});

describe('the config and its secret must be the user\'s own, as ssh has it', () => {
  /** Run a push with the config written, then changed by `alter` (mode, owner). */
  async function pushAltered(alter: (config: string) => Promise<void>): Promise<CliRun> {
    const file = join(dir, 'config.json');
    // Made afresh: this user's, mode 644.
    await rm(file, { force: true });
    await writeFile(file, JSON.stringify(drSite()), { mode: 0o644 });
    await chmod(file, 0o644);
    await alter(file);
    return runCli(MAIN, ['push', join(dir, 'primary.img'), '@dr-site/vm1'], { env: { RESYNC_CONFIG: file, RESYNC_SECRET_FILE: '' } });
  }

  test('a config others can write is refused, and nothing is sent', async () => {
    await writeFile(join(dir, 'vm1.img'), basis);
    const file = join(dir, 'config.json');
    expect(errorLine(await pushAltered((f) => chmod(f, 0o666)))).toBe(`resync push: error ERR_PARAM: client config ${file} is writable by other users (mode 666); chmod go-w it`);
    expect(errorLine(await pushAltered((f) => chmod(f, 0o620)))).toContain('is writable by other users (mode 620)');
    expect((await readFile(join(dir, 'vm1.img'))).equals(basis)).toBe(true);
  });

  test.skipIf(process.getuid?.() !== 0)('a config or a secret file of another user is refused (run as root: root\'s own pass)', async () => {
    await writeFile(join(dir, 'vm1.img'), basis);
    const file = join(dir, 'config.json');
    expect(errorLine(await pushAltered((f) => chown(f, 65534, 65534)))).toBe(`resync push: error ERR_PARAM: client config ${file} belongs to another user (uid 65534); it must be yours (uid 0) or root's`);
    const secret = join(dir, 'dr.secret');
    await chown(secret, 65534, 65534);
    try {
      expect(errorLine(await pushAltered(async () => undefined))).toContain(`secret file (named by the client config) ${secret} belongs to another user (uid 65534)`);
    } finally {
      await chown(secret, 0, 0);
    }
    expect((await readFile(join(dir, 'vm1.img'))).equals(basis)).toBe(true);
    // Both root's again: the push goes through.
    const ok = await pushAltered(async () => undefined);
    expect(ok.code, ok.stderr).toBe(0);
  });
});

describe('where the config is and how a remote is written', () => {
  test('RESYNC_CONFIG, else XDG_CONFIG_HOME, else ~/.config', () => {
    expect(clientConfigPath({ RESYNC_CONFIG: '/etc/r.json', XDG_CONFIG_HOME: '/x' })).toBe('/etc/r.json');
    expect(clientConfigPath({ XDG_CONFIG_HOME: '/x' })).toBe('/x/resync/config.json');
    expect(clientConfigPath({ XDG_CONFIG_HOME: 'relative' })).toMatch(/\/\.config\/resync\/config\.json$/);
  });

  test('@NAME and @NAME/VOLUME; anything else is no named remote', () => {
    expect(parseNamedRemote('@dr-site/vm1')).toEqual({ name: 'dr-site', volume: 'vm1' });
    expect(parseNamedRemote('@dr-site')).toEqual({ name: 'dr-site', volume: undefined });
    expect(parseNamedRemote('dr:7873/vm1')).toBeNull();
    expect(() => parseNamedRemote('@/vm1')).toThrowError(expect.objectContaining({ code: 'ERR_PARAM' }));
  });
});
