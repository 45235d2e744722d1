/**
 * The server's config is checked strictly: unknown keys (with a suggestion),
 * wrong types, every problem at once with its location, and volume paths
 * the server could not use. Nothing is printed by this layer.
 */
import { chmod, chown, link, mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test, vi } from 'vitest';
import { checkVolumes, ConfigError, isLoopbackHost, readSecretFile, readServerConfig, suggestKey } from '../../src/net/config.js';
import { parseVolumes } from '../../src/cli/commands/net.js';
import { repeatedKeys } from '../../src/net/json-keys.js';
import { readClientConfig } from '../../src/cli/client-config.js';

let dir: string;
let secretFile: string;
let img: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'resync-config-'));
  secretFile = join(dir, 'secret');
  await writeFile(secretFile, 'a-secret-of-twenty-four-b\n', { mode: 0o600 });
  img = join(dir, 'vm1.img');
  await writeFile(img, Buffer.alloc(4096));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function load(cfg: unknown): Promise<ConfigError> {
  const f = join(dir, `c${Math.random().toString(36).slice(2)}.json`);
  await writeFile(f, JSON.stringify(cfg));
  const e = await readServerConfig(f).then(
    () => null,
    (x: unknown) => x,
  );
  expect(e).toBeInstanceOf(ConfigError);
  return e as ConfigError;
}

describe('config schema', () => {
  test('a misspelt key, a string for a boolean and an unknown top-level key are all reported, with locations', async () => {
    const e = await load({
      secretFile,
      volumes: { vm1: { path: img, writeable: true }, vm2: { path: img, writable: 'true' } },
      maxSesions: 4,
    });
    expect(e.code).toBe('ERR_PARAM');
    const lines = e.problems.map((p) => `${p.where}: ${p.message}`);
    expect(lines).toContain('volumes.vm1.writeable: unknown key (did you mean "writable"?)');
    expect(lines).toContain('maxSesions: unknown key (did you mean "maxSessions"?)');
    expect(lines.find((l) => l.startsWith('volumes.vm2.writable: '))).toMatch(/true or false.*got "true"/);
    expect(e.problems).toHaveLength(3);
    expect(e.message).toContain('and 2 more problems');
  });

  test('missing and mistyped fields, bad names and bad numbers', async () => {
    const e = await load({ secretFile, listen: '0.0.0.0:99999', volumes: { 'bad name': { path: img }, ok: {} }, idleTimeoutMs: -1, maxSessions: 2.5, tls: { certFile: 'c' } });
    const where = e.problems.map((p) => p.where).sort();
    expect(where).toEqual(['idleTimeoutMs', 'listen', 'maxSessions', 'tls.keyFile', 'volumes.bad name', 'volumes.ok.path'].sort());
    expect(e.problems.find((p) => p.where === 'volumes.ok.path')!.message).toBe('is required');
  });

  test('a timeout longer than a timer can hold is refused (it would fire at once: every client cut after 1 ms)', async () => {
    const e = await load({ secretFile, volumes: { ok: { path: img } }, handshakeTimeoutMs: 3_000_000_000, idleTimeoutMs: 2 ** 31 });
    expect(e.problems.map((p) => p.where).sort()).toEqual(['handshakeTimeoutMs', 'idleTimeoutMs']);
    expect(e.problems[0]!.message).toMatch(/at most 2147483647/);
  });

  test('no volumes, or not an object', async () => {
    expect((await load({ secretFile, volumes: {} })).problems).toEqual([{ where: 'volumes', message: expect.stringContaining('names no volume') }]);
    expect((await load([1])).problems).toEqual([{ where: '(top level)', message: 'must be a JSON object' }]);
  });

  test('a valid config loads, with relative paths resolved against its file, and prints nothing', async () => {
    const spy = vi.spyOn(process.stderr, 'write');
    await chmod(secretFile, 0o644);
    const f = join(dir, 'good.json');
    await writeFile(f, JSON.stringify({ secretFile: 'secret', volumes: { vm1: { path: 'vm1.img', writable: true }, fresh: { path: 'new.img', writable: true } }, maxSessions: 3 }));
    try {
      const { config, warnings } = await readServerConfig(f);
      expect(config.volumes.vm1).toEqual({ path: img, writable: true, inPlace: true, tempFallback: true, sigCache: true });
      expect(config.maxSessions).toBe(3);
      expect(warnings.some((w) => w.includes('readable by other users'))).toBe(true);
      expect(warnings.some((w) => w.includes('first push creates it'))).toBe(true);
      expect(spy).not.toHaveBeenCalled();
    } finally {
      spy.mockRestore();
      await chmod(secretFile, 0o600);
    }
  });

  test('suggestions only for close keys', () => {
    expect(suggestKey('writeable', ['path', 'writable', 'inPlace'])).toBe('writable');
    expect(suggestKey('inplace', ['path', 'writable', 'inPlace'])).toBe('inPlace');
    expect(suggestKey('colour', ['path', 'writable', 'inPlace'])).toBeUndefined();
  });
});

describe('the config file itself', () => {
  async function loadText(text: string, mode = 0o644): Promise<ConfigError | null> {
    const f = join(dir, `t${Math.random().toString(36).slice(2)}.json`);
    await writeFile(f, text, { mode });
    await chmod(f, mode);
    return readServerConfig(f).then(
      () => null,
      (x: unknown) => x as ConfigError,
    );
  }

  test('a volume named twice is refused (JSON keeps the last: the other one, or its writable flag, would be lost without a word)', async () => {
    const e = await loadText(`{"secretFile": ${JSON.stringify(secretFile)}, "volumes": {"a": {"path": ${JSON.stringify(img)}, "writable": true}, "a": {"path": ${JSON.stringify(img)}}}}`);
    expect(e).toBeInstanceOf(ConfigError);
    expect(e!.problems).toEqual([{ where: 'volumes.a', message: expect.stringContaining('is given twice') }]);
    const top = await loadText(`{"secretFile": ${JSON.stringify(secretFile)}, "secretFile": ${JSON.stringify(secretFile)}, "volumes": {"a": {"path": ${JSON.stringify(img)}}}}`);
    expect(top!.problems).toEqual([{ where: 'secretFile', message: expect.stringContaining('is given twice') }]);
  });

  test('a volume that is not an object, and a number that is not one: each said once, plainly', async () => {
    const e = await load({ secretFile, volumes: { a: null, b: { path: img } }, maxSessions: 'x' });
    expect(e.problems).toEqual(
      expect.arrayContaining([
        { where: 'volumes.a', message: 'must be an object such as {"path": "/srv/vm1.img", "writable": true}, got null' },
        { where: 'maxSessions', message: 'must be a number, got "x"' },
      ]),
    );
  });

  test('a byte order mark at the start is taken', async () => {
    expect(await loadText(`\ufeff{"secretFile": ${JSON.stringify(secretFile)}, "volumes": {"a": {"path": ${JSON.stringify(img)}}}}`)).toBeNull();
  });

  test('a config others can write, or another user owns, is refused', async () => {
    const good = `{"secretFile": ${JSON.stringify(secretFile)}, "volumes": {"a": {"path": ${JSON.stringify(img)}}}}`;
    for (const mode of [0o666, 0o620]) {
      const e = await loadText(good, mode);
      expect(e!.problems).toEqual([{ where: '(file)', message: `is writable by other users (mode ${mode.toString(8)}); chmod go-w it` }]);
    }
    expect(await loadText(good, 0o644)).toBeNull();
    if (process.getuid?.() === 0) {
      const f = join(dir, 'other-owner.json');
      await writeFile(f, good, { mode: 0o644 });
      await chown(f, 4321, 4321);
      const e = await readServerConfig(f).then(
        () => null,
        (x: unknown) => x as ConfigError,
      );
      expect(e!.problems).toEqual([{ where: '(file)', message: expect.stringContaining('belongs to user 4321') }]);
    }
  });

  test('repeated keys are found at any depth, and not confused by strings, escapes or arrays', () => {
    expect(repeatedKeys('{"a":1,"b":{"c":2,"c":3},"d":[{"e":1},{"e":2}],"f":"\\"a\\":","a":4}')).toEqual([
      { where: 'b', key: 'c' },
      { where: '', key: 'a' },
    ]);
    expect(repeatedKeys('{"x":{"y":{"z":1,"z\\"":2}},"w":[1,2,{"q":[{"q":1}]}]}')).toEqual([]);
    expect(repeatedKeys('{"v":{"n":{"p":1,"p":2}},"v2":{"n":{"p":1}}}')).toEqual([{ where: 'v.n', key: 'p' }]);
  });

  test('the client config refuses a remote named twice', async () => {
    const f = join(dir, 'client.json');
    await writeFile(f, '{"remotes": {"dr": {"host": "127.0.0.1"}, "dr": {"host": "127.0.0.2"}}}', { mode: 0o600 });
    const e = await readClientConfig(f).then(
      () => null,
      (x: unknown) => x as ConfigError,
    );
    expect(e).toBeInstanceOf(ConfigError);
    expect(e!.problems).toEqual([{ where: 'remotes.dr', message: expect.stringContaining('is given twice') }]);
  });
});

describe('volume paths checked at start', () => {
  test('missing read-only volume, a directory, an uncreatable writable volume, a duplicate', async () => {
    const sub = join(dir, 'adir');
    await mkdir(sub, { recursive: true });
    const { problems, warnings } = await checkVolumes({
      gone: { path: join(dir, 'missing.img'), writable: false },
      d: { path: sub, writable: false },
      nodir: { path: join(dir, 'no-such-dir', 'x.img'), writable: true },
      a: { path: img, writable: false },
      b: { path: img, writable: true },
    });
    const by = Object.fromEntries(problems.map((p) => [p.where, p.message]));
    expect(by['volumes.gone.path']).toContain('no such file');
    expect(by['volumes.d.path']).toContain('is a directory');
    expect(by['volumes.nodir.path']).toContain('cannot create it');
    // Two names for one image are allowed (the image lock serialises them), with a warning.
    expect(by['volumes.b.path']).toBeUndefined();
    expect(warnings.join('\n')).toContain('is also volume a');
    expect(by['volumes.a.path']).toBeUndefined();
  });

  test('a hard link or a symlink in another directory is the same file: a warning names the other volume (once, not for the same path twice)', async () => {
    const img = join(dir, 'linked.img');
    await writeFile(img, Buffer.alloc(4096));
    await mkdir(join(dir, 'elsewhere'), { recursive: true });
    await link(img, join(dir, 'elsewhere', 'hard.img')).catch(() => undefined);
    await symlink(img, join(dir, 'elsewhere', 'sym.img')).catch(() => undefined);
    const { problems, warnings } = await checkVolumes({
      a: { path: img, writable: true },
      h: { path: join(dir, 'elsewhere', 'hard.img'), writable: true },
      s: { path: join(dir, 'elsewhere', 'sym.img'), writable: false },
      again: { path: img, writable: false },
    });
    expect(problems).toEqual([]);
    expect(warnings).toEqual([
      expect.stringMatching(/^volumes\.h\.path: .*hard\.img is the same file as volume a; sessions under the two names take turns$/),
      expect.stringMatching(/^volumes\.s\.path: .*sym\.img is the same file as volume a;/),
      expect.stringMatching(/^volumes\.again\.path: .*linked\.img is also volume a;/),
    ]);
  });

  test('a config naming a missing volume refuses to load', async () => {
    const e = await load({ secretFile, volumes: { vm1: { path: join(dir, 'nope.img') } } });
    expect(e.problems).toEqual([{ where: 'volumes.vm1.path', message: expect.stringContaining('no such file') }]);
  });
});

describe('--volume', () => {
  test(':wr, a repeated name and a malformed spec are refused; :rw, :ro and no mode are read', () => {
    const e = (() => {
      try {
        parseVolumes(['vm1=/srv/vm1.img:wr', 'vm2=/a:rw', 'vm2=/b', 'oops']);
      } catch (x) {
        return x as ConfigError;
      }
      return null;
    })();
    expect(e).toBeInstanceOf(ConfigError);
    expect(e!.problems.map((p) => p.where)).toEqual(['--volume vm1', '--volume vm2', '--volume oops']);
    expect(e!.problems[0]!.message).toContain('unknown mode ":wr"');
    expect(parseVolumes(['a=/x:rw', 'b=/y:ro', 'c=/z'])).toEqual({
      a: { path: '/x', writable: true },
      b: { path: '/y', writable: false },
      c: { path: '/z', writable: false },
    });
  });
});

describe('secret files', () => {
  test('long enough but one byte repeated, or a few: refused; a random one and a passphrase are taken', async () => {
    const f = join(dir, 'weak.secret');
    for (const weak of [' '.repeat(16), 'a'.repeat(40), 'abababababababab\n', '0000000011111111222']) {
      await writeFile(f, weak, { mode: 0o600 });
      await expect(readSecretFile(f), JSON.stringify(weak)).rejects.toMatchObject({ code: 'ERR_PARAM', message: /distinct byte value.*use a random one/ });
    }
    for (const good of ['correct horse battery staple', 'Zm9vYmFyYmF6cXV4cXV1eA==\n', '0123456789abcdef']) {
      await writeFile(f, good, { mode: 0o600 });
      expect((await readSecretFile(f)).toString(), JSON.stringify(good)).toBe(good.replace(/\n$/, ''));
    }
  });
});

describe('listen addresses only this host reaches (serve warns about plain TCP on any other)', () => {
  test('loopback: 127.0.0.0/8, ::1, localhost, and their bracketed and mapped spellings', () => {
    for (const h of ['127.0.0.1', '127.1.2.3', '::1', '[::1]', 'localhost', 'LOCALHOST', '::ffff:127.0.0.1']) expect(isLoopbackHost(h), h).toBe(true);
  });
  test('anything else is not', () => {
    for (const h of ['0.0.0.0', '::', '[::]', '10.0.0.1', '192.168.1.5', '128.0.0.1', 'example.net', '127.0.0.1.example.net', '::2']) expect(isLoopbackHost(h), h).toBe(false);
  });
});
