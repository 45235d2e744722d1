/**
 * resync as a user gets it: `npm pack` of this checkout, installed into an
 * empty project, then driven through the installed `resync` command. Checks
 * what the tarball holds (what runs, nothing of the bench, fuzzer or tests)
 * and that the install step built the native helper and a code cache that
 * the installed CLI uses.
 *
 * Offline: the tarball's dependencies are installed at the versions of this
 * checkout's package-lock.json from npm's cache (`npm ci` filled it), with
 * `npm ci --offline`. The tarball is packed without running `prepare`, from
 * the build `npm test` makes first (`npm run build` before running this file
 * alone).
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { builtinModules } from 'node:module';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const PKG = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as {
  version: string;
  dependencies: Record<string, string>;
  license: string;
  bin: Record<string, string>;
  engines: Record<string, string>;
};

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function run(cmd: string, args: string[], opts: { cwd: string; env?: NodeJS.ProcessEnv; timeout?: number }): Promise<Run> {
  return new Promise((resolve) => {
    execFile(cmd, args, { cwd: opts.cwd, env: opts.env ?? process.env, timeout: opts.timeout ?? 30_000, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

let work: string;
let project: string;
let installed: string;
let packed: string[];
let bin: string;

/** The installed command, run from the project directory. */
function resync(...args: string[]): Promise<Run> {
  return run(bin, args, { cwd: project });
}

function sha(b: Uint8Array): string {
  return createHash('sha256').update(b).digest('hex');
}

/**
 * package.json and package-lock.json of a project that depends on the
 * tarball only, its dependencies pinned as this checkout's lock pins them
 * (without the development-only ones), so `npm ci --offline` needs nothing
 * but npm's cache.
 */
async function writeProject(dir: string, tgz: string): Promise<void> {
  const lock = JSON.parse(await readFile(join(ROOT, 'package-lock.json'), 'utf8')) as { packages: Record<string, Record<string, unknown>> };
  const spec = `file:${relative(dir, tgz)}`;
  const packages: Record<string, unknown> = {
    '': { name: 'resync-e2e', dependencies: { resync: spec } },
    'node_modules/resync': {
      version: PKG.version,
      resolved: spec,
      integrity: `sha512-${createHash('sha512').update(await readFile(tgz)).digest('base64')}`,
      hasInstallScript: true,
      license: PKG.license,
      dependencies: PKG.dependencies,
      bin: PKG.bin,
      engines: PKG.engines,
    },
  };
  for (const [path, entry] of Object.entries(lock.packages)) {
    if (path === '' || entry.dev === true) continue;
    // Needed by an optional runtime dependency as well as by a dev one: optional here.
    const { devOptional, ...rest } = entry;
    packages[path] = devOptional === true ? { ...rest, optional: true } : entry;
  }
  await writeFile(join(dir, 'package.json'), JSON.stringify({ name: 'resync-e2e', private: true, dependencies: { resync: spec } }, null, 2));
  await writeFile(join(dir, 'package-lock.json'), JSON.stringify({ name: 'resync-e2e', lockfileVersion: 3, requires: true, packages }, null, 2));
}

beforeAll(async () => {
  expect(existsSync(join(ROOT, 'dist/resync.cjs')), 'dist/resync.cjs is missing: npm run build first').toBe(true);
  work = await mkdtemp(join(tmpdir(), 'resync-e2e-'));
  const p = await run('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', work], { cwd: ROOT, timeout: 60_000 });
  expect(p.code, p.stderr).toBe(0);
  const info = JSON.parse(p.stdout) as { filename: string; files: { path: string }[] }[];
  packed = info[0]!.files.map((f) => f.path).sort();
  const tgz = join(work, info[0]!.filename);
  project = join(work, 'project');
  await mkdir(project);
  await writeProject(project, tgz);
  const i = await run('npm', ['ci', '--offline', '--no-audit', '--no-fund'], { cwd: project, timeout: 90_000 });
  expect(i.code, `${i.stdout}\n${i.stderr}`).toBe(0);
  installed = join(project, 'node_modules/resync');
  bin = join(project, 'node_modules/.bin/resync');
}, 120_000);

afterAll(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

describe('the tarball', () => {
  test('holds what runs and its documents', () => {
    for (const f of [
      'LICENSE',
      'README.md',
      'package.json',
      'bin/resync.js',
      'bin/package.json',
      'dist/resync.cjs',
      'dist/src/index.js',
      'dist/src/index.d.ts',
      'dist/src/cli/main.js',
      'dist/protocol/index.js',
      'src/native/extents.c',
      'scripts/build-native.mjs',
      'scripts/install.mjs',
      'contrib/resync.service',
      'docs/user-guide.md',
      'docs/exit-codes.md',
      'protocol/SPEC.md',
      'protocol/WIRE.md',
    ]) {
      expect(packed, f).toContain(f);
    }
  });

  test('holds nothing of the bench, fuzzer or tests, no source maps, no host-built binary or stale code cache', () => {
    const unwanted = packed.filter(
      (f) => /^(dist\/(bench|fuzz|test)|bench|fuzz|test|fixtures|build)\//.test(f) || f.endsWith('.map') || f.endsWith('.node') || f.endsWith('.cache') || (f.endsWith('.ts') && !f.endsWith('.d.ts')),
    );
    expect(unwanted).toEqual([]);
  });

  test('LICENSE is the MIT licence package.json names', () => {
    expect(PKG.license).toBe('MIT');
    const text = readFileSync(join(installed, 'LICENSE'), 'utf8');
    expect(text).toMatch(/^MIT License/);
    expect(text).toMatch(/Copyright \(c\) \d{4} The resync authors/);
  });

  test('every package the shipped modules import is a runtime dependency', async () => {
    const deps = new Set(Object.keys(PKG.dependencies));
    const builtins = new Set(builtinModules);
    const missing: string[] = [];
    async function scan(dir: string): Promise<void> {
      for (const e of await readdir(dir, { withFileTypes: true })) {
        const path = join(dir, e.name);
        if (e.isDirectory()) await scan(path);
        else if (e.name.endsWith('.js')) {
          const text = await readFile(path, 'utf8');
          for (const m of text.matchAll(/(?:\bfrom\s*|\bimport\s*\(\s*|\brequire\s*\(\s*|^import\s+)['"]([^'"]+)['"]/gm)) {
            const spec = m[1]!;
            if (spec.startsWith('.') || spec.startsWith('node:') || builtins.has(spec)) continue;
            const name = spec.startsWith('@') ? spec.split('/').slice(0, 2).join('/') : spec.split('/')[0]!;
            if (!deps.has(name)) missing.push(`${relative(installed, path)}: ${spec}`);
          }
        }
      }
    }
    await scan(join(installed, 'dist/src'));
    await scan(join(installed, 'dist/protocol'));
    expect(missing).toEqual([]);
    // The test oracle stays out of an install.
    expect(existsSync(join(project, 'node_modules/adler-32'))).toBe(false);
  });
});

describe('the install step', () => {
  test('built the native extent helper for this host when there is a C compiler and Node\'s headers', async () => {
    const cc = await run('sh', ['-c', 'command -v "${CC:-cc}"'], { cwd: project });
    const headers = [join(dirname(process.execPath), '../include/node'), '/usr/include/node', '/usr/local/include/node'].some((d) => existsSync(join(d, 'node_api.h')));
    // Without them the install says why and resync reads holes like data (sparse-read.test.ts).
    expect(existsSync(join(installed, 'build/extents.node'))).toBe(cc.code === 0 && headers && process.platform === 'linux');
  });

  test('wrote a code cache the installed CLI uses (npm resets file times: the cache is keyed by content)', async () => {
    expect(existsSync(join(installed, 'dist/resync.cjs.cache'))).toBe(true);
    const r = await run(bin, ['--help'], { cwd: project, env: { ...process.env, RESYNC_TRACE: '1' } });
    expect(r.code).toBe(0);
    expect(/code cache (\w+)/.exec(r.stderr)?.[1]).toBe('used');
  });
});

describe('the service unit and the server setup in the user guide', () => {
  const unitPath = (): string => join(installed, 'contrib/resync.service');
  const guide = (): string => readFileSync(join(installed, 'docs/user-guide.md'), 'utf8');
  /** `key=value` lines of the unit, repeated keys kept in order. */
  function directives(text: string): [string, string][] {
    return text
      .split('\n')
      .map((l) => /^(\w+)=(.*)$/.exec(l.trim()))
      .filter((m): m is RegExpExecArray => m !== null)
      .map((m) => [m[1]!, m[2]!]);
  }

  test('systemd-analyze verify accepts contrib/resync.service without a warning', async (ctx) => {
    const which = await run('sh', ['-c', 'command -v systemd-analyze'], { cwd: project });
    if (which.code !== 0) ctx.skip('no systemd-analyze on this machine');
    const r = await run('systemd-analyze', ['verify', unitPath()], { cwd: project });
    expect(r, r.stderr).toMatchObject({ code: 0, stderr: '' });
  });

  test('under ProtectSystem=strict the unit leaves the volumes, the device journals directory and the state directory writable', async () => {
    const d = directives(readFileSync(unitPath(), 'utf8'));
    expect(d).toContainEqual(['ProtectSystem', 'strict']);
    const writable = [
      ...d.filter(([k]) => k === 'ReadWritePaths').flatMap(([, v]) => v.split(/\s+/)),
      ...d.filter(([k]) => k === 'StateDirectory').flatMap(([, v]) => v.split(/\s+/).map((n) => `/var/lib/${n}`)),
    ];
    const env = d.filter(([k]) => k === 'Environment').map(([, v]) => /^RESYNC_JOURNAL_DIR=(.*)$/.exec(v)?.[1]).find((v) => v !== undefined);
    // Where the server puts the journal of a volume on /dev, with the unit's environment.
    const { journalPathFor } = await import('../../src/io/journal.js');
    const saved = process.env.RESYNC_JOURNAL_DIR;
    if (env === undefined) delete process.env.RESYNC_JOURNAL_DIR;
    else process.env.RESYNC_JOURNAL_DIR = env;
    let journalDir: string;
    try {
      journalDir = dirname(journalPathFor('/dev/vg0/db-replica'));
    } finally {
      if (saved === undefined) delete process.env.RESYNC_JOURNAL_DIR;
      else process.env.RESYNC_JOURNAL_DIR = saved;
    }
    const under = (p: string): boolean => writable.some((w) => p === w || p.startsWith(`${w}/`));
    expect(under(journalDir), `${journalDir} in ${writable.join(' ')}`).toBe(true);
    // Where NBD volumes' undo journals and locks go: the state directory, with the unit's environment (the account has no home).
    const xdg = d.filter(([k]) => k === 'Environment').map(([, v]) => /^XDG_STATE_HOME=(.*)$/.exec(v)?.[1]).find((v) => v !== undefined);
    const { defaultStateDir } = await import('../../src/io/state-dir.js');
    const stateDir = defaultStateDir(xdg !== undefined ? { XDG_STATE_HOME: xdg } : {});
    expect(under(stateDir), `${stateDir} in ${writable.join(' ')}`).toBe(true);
    // The guide's example volumes live in /srv/images.
    expect(under('/srv/images/vm1.img')).toBe(true);
  });

  test('the guide shows the shipped unit as it is', () => {
    const block = /```ini\n([\s\S]*?)```/.exec(guide())?.[1];
    expect(block).toBe(readFileSync(unitPath(), 'utf8'));
  });

  test('the guide creates the account before giving it a directory', () => {
    const g = guide();
    const useradd = g.indexOf('useradd');
    expect(useradd).toBeGreaterThan(0);
    expect(g.indexOf('-o resync')).toBeGreaterThan(useradd);
    expect(g.indexOf('chown resync')).toBe(-1);
  });

  test('the example server config listens beyond the loopback only with TLS', () => {
    const g = guide();
    const at = g.indexOf('**2. The configuration**');
    const text = /```json\n([\s\S]*?)```/.exec(g.slice(at))?.[1];
    const cfg = JSON.parse(text!) as { listen: string; tls?: { certFile?: string; keyFile?: string } };
    const loopback = /^(127\.|\[::1\]:|localhost:)/.test(cfg.listen);
    if (!loopback) expect(cfg.tls).toMatchObject({ certFile: expect.any(String), keyFile: expect.any(String) });
  });
});

describe('the installed command', () => {
  let a: Buffer;
  let b: Buffer;

  beforeAll(async () => {
    // 3 MiB + a tail, and a copy with a few regions rewritten and a grown end.
    a = randomBytes(3 * 1024 * 1024 + 4321);
    b = Buffer.concat([a, randomBytes(70_000)]);
    for (const at of [5_000, 1_000_000, 2_500_000]) randomBytes(9_000).copy(b, at);
    await writeFile(join(project, 'old.img'), a);
    await writeFile(join(project, 'new.img'), b);
  });

  test.concurrent('--version prints the package version', async () => {
    // The project directory has a package.json of its own: the version must be resync's
    // (issue 14 item 5: yargs guessed it from the working directory and printed "unknown").
    const r = await resync('--version');
    expect(r).toMatchObject({ code: 0, stdout: `${PKG.version}\n` });
  });

  test.concurrent('--help lists the commands', async () => {
    const r = await resync('--help');
    expect(r.code).toBe(0);
    for (const c of ['signature', 'delta', 'patch', 'serve', 'push', 'pull', 'verify']) expect(r.stdout).toContain(`resync ${c}`);
  });

  test.concurrent('signature, delta and patch rebuild the new image; --resume after the in-place patch has nothing to resume', async () => {
    expect((await resync('signature', 'old.img', 'old.sig')).code).toBe(0);
    expect((await resync('delta', 'old.sig', 'new.img', 'new.delta')).code).toBe(0);
    expect((await resync('patch', 'old.img', 'new.delta', 'rebuilt.img')).code).toBe(0);
    expect(sha(await readFile(join(project, 'rebuilt.img')))).toBe(sha(b));
    // The delta carries the changes, not the image.
    expect((await readFile(join(project, 'new.delta'))).length).toBeLessThan(b.length / 4);

    // As in the README: an in-place patch, then --resume (there is no journal left).
    await writeFile(join(project, 'inplace.img'), a);
    expect((await resync('patch', 'inplace.img', 'new.delta', '--in-place')).code).toBe(0);
    const r = await resync('patch', 'inplace.img', 'new.delta', '--resume');
    expect(r.code, r.stderr).toBe(0);
    expect(`${r.stdout}${r.stderr}`).toMatch(/nothing to resume/);
    expect(sha(await readFile(join(project, 'inplace.img')))).toBe(sha(b));
  });

  test.concurrent('an existing output is not overwritten without --force', async () => {
    // Arguments swapped as in issue 14 item 1: the "signature" would replace the image.
    // Refused as swapped arguments (a signature as BASIS, an image as SIGNATURE), with or without -f/--force.
    await writeFile(join(project, 'keep.img'), b);
    expect((await resync('signature', 'old.img', 'keep.sig')).code).toBe(0);
    const r = await resync('signature', 'keep.sig', 'keep.img');
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/--force/);
    expect(sha(await readFile(join(project, 'keep.img')))).toBe(sha(b));
  });

  test.concurrent('push to a server on 127.0.0.1 makes its volume identical', async () => {
    const dir = join(project, 'srv');
    await mkdir(dir);
    await writeFile(join(dir, 'vol.img'), a);
    await writeFile(join(dir, 'secret'), randomBytes(24).toString('base64'), { mode: 0o600 });
    const port = await freePort();
    const server = spawn(bin, ['serve', '--listen', `127.0.0.1:${port}`, '--volume', `v=${join(dir, 'vol.img')}:rw`, '--secret-file', join(dir, 'secret')], {
      cwd: project,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let log = '';
    server.stdout!.on('data', (d: Buffer) => (log += d.toString()));
    server.stderr!.on('data', (d: Buffer) => (log += d.toString()));
    try {
      await waitForPort(port, server, () => log);
      const r = await resync('push', 'new.img', `127.0.0.1:${port}/v`, '--secret-file', join(dir, 'secret'));
      expect(r.code, `${r.stderr}\nserver: ${log}`).toBe(0);
      expect(sha(await readFile(join(dir, 'vol.img')))).toBe(sha(b));
    } finally {
      server.kill('SIGTERM');
      await new Promise((resolve) => (server.exitCode !== null || server.signalCode !== null ? resolve(null) : server.once('exit', resolve)));
    }
  });
});

/** A port nothing listens on now (the kernel's pick, released). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const addr = s.address();
      s.close(() => (typeof addr === 'object' && addr ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}

/** Resolves once 127.0.0.1:port accepts a connection; rejects if the server exits or 15 s pass. */
async function waitForPort(port: number, server: ChildProcess, log: () => string): Promise<void> {
  const until = Date.now() + 15_000;
  for (;;) {
    if (server.exitCode !== null) throw new Error(`resync serve exited with ${server.exitCode}: ${log()}`);
    const up = await new Promise<boolean>((resolve) => {
      const c = connect(port, '127.0.0.1');
      c.once('connect', () => {
        c.destroy();
        resolve(true);
      });
      c.once('error', () => resolve(false));
    });
    if (up) return;
    if (Date.now() > until) throw new Error(`resync serve did not listen on 127.0.0.1:${port}: ${log()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
