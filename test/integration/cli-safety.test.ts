/**
 * The CLI's guard rails, through the installed entry point (bin/resync.js and
 * the bundle dist/resync.cjs; `npm run build` first): outputs are replaced
 * only with --force and never when they are an input; symbolic links are
 * written through; FIFOs are refused at once; every option value is checked
 * with a one-line usage error; --version is resync's own from any directory;
 * help wraps at words and describes every option; errors carry hints; `-`
 * reads standard input and writes standard output.
 */
import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { copyFile, link, lstat, mkdtemp, readFile, readlink, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { hashImage } from '../../src/api/files.js';
import { ResyncServer } from '../../src/net/server.js';
import { SignatureFileDecoder } from '../../src/format/sigfile.js';
import { makePair } from '../../src/testing/workload.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const BIN = join(ROOT, 'bin/resync.js');
const MAIN = join(ROOT, 'dist/src/cli/main.js');

interface Run {
  code: number;
  stdout: Buffer;
  stderr: string;
}

/** Run an entry point with `args`, `stdin` piped in (or nothing); never rejects. */
function run(entry: string, args: string[], opts: { stdin?: Buffer; cwd?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<Run> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [entry, ...args], { cwd: opts.cwd, env: opts.env ?? process.env, stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 60_000);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? (signal ? -1 : 0), stdout: Buffer.concat(out), stderr: Buffer.concat(err).toString() });
    });
    child.stdin.on('error', () => undefined);
    child.stdin.end(opts.stdin ?? Buffer.alloc(0));
  });
}

const cli = (...args: string[]): Promise<Run> => run(BIN, args);

/** stderr must be exactly one non-empty line, and no stack trace. */
function oneLine(r: Run): string {
  const lines = r.stderr.split('\n').filter((l) => l.length > 0);
  expect(lines, `stderr: ${r.stderr}`).toHaveLength(1);
  expect(r.stderr).not.toMatch(/\n\s+at /);
  return lines[0]!;
}

/** The one JSON object on stdout. */
function json(r: Run): Record<string, unknown> {
  const lines = r.stdout.toString().trim().split('\n');
  expect(lines, `stdout: ${r.stdout.toString()}`).toHaveLength(1);
  return JSON.parse(lines[0]!) as Record<string, unknown>;
}

let d: string;
let basis: string;
let target: string;
let sig: string;
let delta: string;

beforeAll(async () => {
  expect(existsSync(BIN) && existsSync(join(ROOT, 'dist/resync.cjs')), 'build first: npm run build').toBe(true);
  d = await mkdtemp(join(tmpdir(), 'resync-cli-safety-'));
  const pair = await makePair(d, 'mixed', 1024 * 1024 + 77, 11);
  basis = pair.basis;
  target = pair.target;
  sig = join(d, 'basis.sig');
  delta = join(d, 'target.delta');
  expect((await cli('signature', '-q', basis, sig)).code).toBe(0);
  expect((await cli('delta', '-q', sig, target, delta)).code).toBe(0);
});

afterAll(async () => {
  await rm(d, { recursive: true, force: true });
});

describe('outputs: --force to replace, never an input', () => {
  test('signature with its arguments swapped leaves the image alone (exit 2)', async () => {
    const img = join(d, 'swap.img');
    await copyFile(basis, img);
    const s = join(d, 'swap.sig');
    await copyFile(sig, s);
    const before = await hashImage(img);
    // `resync signature recovery.sig recovery.img`: the image is the output. With -f too (the rdiff habit).
    for (const force of [[], ['-f']]) {
      const r = await cli('signature', ...force, s, img);
      expect(r.code).toBe(2);
      expect(oneLine(r)).toMatch(/BASIS .*swap\.sig is a resync signature, and SIGNATURE .*swap\.img is not: the arguments look swapped/);
      expect((await hashImage(img)).equals(before)).toBe(true);
    }
    // An rdiff signature as BASIS is caught the same way.
    const rs = join(d, 'swap.rsig');
    expect((await cli('signature', '--format', 'rdiff', img, rs)).code).toBe(0);
    const r2 = await cli('signature', '-f', rs, img);
    expect(r2.code).toBe(2);
    expect(oneLine(r2)).toContain('is an rdiff signature');
    expect((await hashImage(img)).equals(before)).toBe(true);
    // A signature of a signature file is still made where it destroys nothing: a new file, or over another signature.
    expect((await cli('signature', '-q', s, join(d, 'sig-of-sig'))).code).toBe(0);
    expect((await cli('signature', '-q', '-f', s, join(d, 'sig-of-sig'))).code).toBe(0);
  });

  test('delta with NEWFILE and DELTA swapped leaves the image alone, even with -f (exit 2)', async () => {
    const img = join(d, 'dswap.img');
    await copyFile(target, img);
    const before = await hashImage(img);
    const r = await cli('delta', '-f', sig, delta, img);
    expect(r.code).toBe(2);
    expect(oneLine(r)).toMatch(/NEWFILE .*target\.delta is a resync delta, and DELTA .*dswap\.img is not: the arguments look swapped/);
    expect((await hashImage(img)).equals(before)).toBe(true);
  });

  test.each([
    ['the same path', (p: string) => Promise.resolve(p)],
    ['a ./ spelling of it', async (p: string) => `${d}/./${p.slice(d.length + 1)}`],
    ['a hard link to it', async (p: string) => {
      const l = join(d, `hard-${randomBytes(3).toString('hex')}.img`);
      await link(p, l);
      return l;
    }],
  ])('an output that is the input through %s is refused even with --force', async (_what, spell) => {
    const img = join(d, `same-${randomBytes(3).toString('hex')}.img`);
    await copyFile(basis, img);
    const before = await hashImage(img);
    const r = await cli('signature', '--force', img, await spell(img));
    expect(r.code).toBe(2);
    expect(oneLine(r)).toContain('is the same file as BASIS');
    expect((await hashImage(img)).equals(before)).toBe(true);
  });

  test('delta: an existing DELTA needs --force; DELTA = SIGNATURE or NEWFILE never', async () => {
    const out = join(d, 'exists.delta');
    await writeFile(out, 'old');
    const r1 = await cli('delta', sig, target, out);
    expect(r1.code).toBe(2);
    expect(oneLine(r1)).toContain('already exists');
    expect(await readFile(out, 'utf8')).toBe('old');
    const r2 = await cli('delta', '-q', '--force', sig, target, out);
    expect(r2.code, r2.stderr).toBe(0);
    expect((await stat(out)).size).toBe((await stat(delta)).size);
    const s = join(d, 'self.sig');
    await copyFile(sig, s);
    const r3 = await cli('delta', '-f', s, target, s);
    expect(r3.code).toBe(2);
    expect(oneLine(r3)).toContain('is the same file as SIGNATURE');
    expect((await readFile(s)).equals(await readFile(sig))).toBe(true);
    const t = join(d, 'self-new.img');
    await copyFile(target, t);
    const r4 = await cli('delta', '-f', sig, t, t);
    expect(r4.code).toBe(2);
    expect(oneLine(r4)).toContain('is the same file as NEWFILE');
  });

  test('patch: an existing OUTPUT needs --force; OUTPUT = DELTA never; OUTPUT = BASIS is the documented replace', async () => {
    const out = join(d, 'exists.img');
    await writeFile(out, 'old');
    const r1 = await cli('patch', basis, delta, out);
    expect(r1.code).toBe(2);
    expect(await readFile(out, 'utf8')).toBe('old');
    expect((await cli('patch', '-q', '-f', basis, delta, out)).code).toBe(0);
    expect((await hashImage(out)).equals(await hashImage(target))).toBe(true);
    const dl = join(d, 'self.delta');
    await copyFile(delta, dl);
    const r2 = await cli('patch', '-f', basis, dl, dl);
    expect(r2.code).toBe(2);
    expect(oneLine(r2)).toContain('is the same file as DELTA');
    const b = join(d, 'replace.img');
    await copyFile(basis, b);
    const r3 = await cli('patch', '-q', b, delta, b);
    expect(r3.code, r3.stderr).toBe(0);
    expect((await hashImage(b)).equals(await hashImage(target))).toBe(true);
    // Another name of BASIS (a hard link) is an existing file of its own: -f, and then only that name changes.
    const b2 = join(d, 'replace2.img');
    await copyFile(basis, b2);
    const hl = join(d, 'replace2-link.img');
    await link(b2, hl);
    const r4 = await cli('patch', b2, delta, hl);
    expect(r4.code).toBe(2);
    expect(oneLine(r4)).toContain('is another name (a hard link) of BASIS');
    expect((await hashImage(hl)).equals(await hashImage(basis))).toBe(true);
    const r5 = await cli('patch', '-q', '-f', b2, delta, hl);
    expect(r5.code, r5.stderr).toBe(0);
    expect((await hashImage(hl)).equals(await hashImage(target))).toBe(true);
    expect((await hashImage(b2)).equals(await hashImage(basis))).toBe(true);
  });

  test('a symbolic link as the output is written through: the file it points to gets the new image, the link stays', async () => {
    const real = join(d, 'real.img');
    await copyFile(basis, real);
    const lnk = join(d, 'link.img');
    await symlink('real.img', lnk);
    const r = await cli('patch', '-q', '-f', basis, delta, lnk);
    expect(r.code, r.stderr).toBe(0);
    expect((await lstat(lnk)).isSymbolicLink()).toBe(true);
    expect(await readlink(lnk)).toBe('real.img');
    expect((await hashImage(real)).equals(await hashImage(target))).toBe(true);
  });

  test('a symbolic link to a missing file is refused', async () => {
    const lnk = join(d, 'dangling.sig');
    await symlink('nowhere.sig', lnk);
    const r = await cli('signature', basis, lnk);
    expect(r.code).toBe(2);
    expect(oneLine(r)).toContain('symbolic link to a missing file');
    expect(existsSync(join(d, 'nowhere.sig'))).toBe(false);
  });
});

describe('pull --no-in-place into a symbolic link', () => {
  test('writes the file the link points to; the link stays', async () => {
    const vol = join(d, 'pull-vol.img');
    await copyFile(target, vol);
    const secretText = randomBytes(24).toString('base64');
    const secretFile = join(d, 'pull-secret');
    await writeFile(secretFile, secretText, { mode: 0o600 });
    const server = new ResyncServer({
      host: '127.0.0.1',
      port: 0,
      secret: Buffer.from(secretText),
      volumes: { v: { path: vol, writable: false } },
      maxSessions: 4,
      idleTimeoutMs: 10_000,
      handshakeTimeoutMs: 10_000,
    });
    const port = await server.listen();
    try {
      const real = join(d, 'pull-real.img');
      await copyFile(basis, real);
      const lnk = join(d, 'pull-link.img');
      await symlink('pull-real.img', lnk);
      const r = await cli('pull', '-q', '--no-in-place', '--secret-file', secretFile, `127.0.0.1:${port}/v`, lnk);
      expect(r.code, r.stderr).toBe(0);
      expect((await lstat(lnk)).isSymbolicLink()).toBe(true);
      expect((await hashImage(real)).equals(await hashImage(target))).toBe(true);
    } finally {
      await server.close();
    }
  });
});

describe('a signature whose stored basis hash was changed', () => {
  test('fails at once with ERR_CORRUPT (exit 3), before any delta is written', async () => {
    const bad = join(d, 'flipped.sig');
    const b = await readFile(sig);
    // SigEnd ends with basisHash (bin 8, 32 bytes) then the digest (bin 8, 32 bytes).
    b[b.length - 50]! ^= 0x01;
    await writeFile(bad, b);
    const r = await cli('delta', bad, target, join(d, 'flipped.delta'));
    expect(r.code).toBe(3);
    expect(oneLine(r)).toContain('ERR_CORRUPT');
    expect(existsSync(join(d, 'flipped.delta'))).toBe(false);
  });
});

describe('inputs that are not files fail at once', () => {
  let fifo: string;
  beforeAll(async () => {
    fifo = join(d, 'fifo');
    await new Promise<void>((res, rej) => execFile('mkfifo', [fifo], (e) => (e ? rej(e) : res())));
  });

  test.each([
    ['signature', (f: string) => ['signature', f, join(d, 'fifo.sig')], 'BASIS'],
    ['delta (NEWFILE)', (f: string) => ['delta', sig, f, join(d, 'fifo.delta')], 'NEWFILE'],
    ['delta (SIGNATURE)', (f: string) => ['delta', f, target, join(d, 'fifo2.delta')], 'SIGNATURE'],
    ['patch (DELTA)', (f: string) => ['patch', basis, f, join(d, 'fifo.img')], 'DELTA'],
    ['push', (f: string) => ['push', f, '127.0.0.1:9/v', '--secret-file', join(d, 'none')], 'IMAGE'],
    ['verify', (f: string) => ['verify', basis, f], 'B'],
  ])('%s given a FIFO: exit 2 with one line, no hang', async (_what, args, name) => {
    const r = await run(BIN, args(fifo), { timeoutMs: 15_000 });
    expect(r.code).toBe(2);
    expect(oneLine(r)).toContain(`${name} ${fifo} is a FIFO (named pipe)`);
  });

  test('a directory as BASIS', async () => {
    const r = await cli('signature', d, join(d, 'dir.sig'));
    expect(r.code).toBe(2);
    expect(oneLine(r)).toContain('is a directory');
  });
});

describe('--format rdiff with --in-place is refused, not ignored', () => {
  test.each([['--in-place'], ['--resume']])('%s', async (flag) => {
    const rsig = join(d, `r${flag}.sig`);
    const rdelta = join(d, `r${flag}.delta`);
    expect((await cli('signature', '-q', '--format', 'rdiff', basis, rsig)).code).toBe(0);
    expect((await cli('delta', '-q', '--format', 'rdiff', rsig, target, rdelta)).code).toBe(0);
    const img = join(d, `r${flag}.img`);
    await copyFile(basis, img);
    const r = await cli('patch', '--format', 'rdiff', flag, img, rdelta);
    expect(r.code).toBe(2);
    expect(oneLine(r)).toContain('work with the resync format only');
    expect((await hashImage(img)).equals(await hashImage(basis))).toBe(true);
  });
});

describe('option values', () => {
  test('verify -b is --block-size, as for every other command', async () => {
    const r = await cli('verify', '--json', '-b', '64K', basis, target);
    expect(r.code).toBe(10);
    expect(json(r)).toMatchObject({ blockSize: 65536 });
  });

  test.each([
    ['--timeout abc', ['push', 'IMG', '127.0.0.1:9/v', '--timeout', 'abc'], '--timeout'],
    ['--timeout -5', ['push', 'IMG', '127.0.0.1:9/v', '--timeout', '-5'], '--timeout'],
    ['--timeout 0', ['pull', '127.0.0.1:9/v', 'IMG', '--timeout', '0'], '--timeout'],
    ['--timeout 1e99', ['verify', 'IMG', '127.0.0.1:9/v', '--timeout', '1e99'], '--timeout'],
    ['--timeout without a value', ['push', 'IMG', '127.0.0.1:9/v', '--timeout'], 'timeout'],
    ['--timeout twice', ['push', 'IMG', '127.0.0.1:9/v', '--timeout', '5', '--timeout', '6'], '--timeout'],
    ['--block-size 12Q', ['push', 'IMG', '127.0.0.1:9/v', '-b', '12Q'], '--block-size'],
    ['--secret-file twice', ['push', 'IMG', '127.0.0.1:9/v', '--secret-file', 'S', '--secret-file', 'S'], '--secret-file is given 2 times'],
    ['--format twice', ['signature', '--format', 'rdiff', '--format', 'resync', 'IMG', 'x.sig'], '--format is given 2 times'],
    ['-b and --block-size', ['push', 'IMG', '127.0.0.1:9/v', '-b', '4K', '--block-size', '8K'], '--block-size is given 2 times'],
    ['--max-ranges 0', ['verify', 'IMG', 'IMG', '--max-ranges', '0'], '--max-ranges'],
    ['--strong-len 7', ['signature', 'IMG', 'x.sig', '--strong-len', '7'], '--strong-len'],
    ['--sum-size 99', ['signature', '--format', 'rdiff', 'IMG', 'x.sig', '--sum-size', '99'], '--sum-size'],
    ['--seed -1', ['demo', '--seed', '-1'], '--seed'],
    ['--seed x', ['demo', '--seed', 'x'], '--seed'],
    ['--size 0', ['demo', '--size', '0'], '--size'],
    ['--hash with --format rdiff', ['signature', '--format', 'rdiff', '--hash', 'sha256', 'IMG', 'x.sig'], '--hash'],
    ['--sig-type without --format rdiff', ['signature', '--sig-type', 'md4', 'IMG', 'x.sig'], '--sig-type'],
    ['--compress with --format rdiff', ['delta', '--format', 'rdiff', '--compress', 'S', 'IMG', 'x.delta'], '--compress'],
    ['secret options with a local B', ['verify', '--secret-file', 'S', 'IMG', 'IMG'], '--secret-file'],
    ['an unknown --scenario', ['demo', '--scenario', 'nope'], 'scenario'],
    // verify's images once were named a and b: -a was taken as the first image and -b swallowed.
    ['verify -a', ['verify', 'IMG', 'IMG', '-a', '4K'], 'Unknown argument: a'],
    ['verify -b 12Q', ['verify', 'IMG', 'IMG', '-b', '12Q'], '--block-size'],
  ])('%s: exit 2, one line, JSON with --json', async (_what, args, mention) => {
    const a = args.map((x) => (x === 'IMG' ? basis : x === 'S' ? sig : x === 'x.sig' || x === 'x.delta' ? join(d, x) : x));
    const r = await cli(...a);
    expect(r.code).toBe(2);
    const line = oneLine(r);
    expect(line).toContain('error ERR_PARAM');
    expect(line).toContain(mention);
    expect(r.stdout.length).toBe(0);
    const j = await cli('--json', ...a);
    expect(j.code).toBe(2);
    expect(json(j)).toMatchObject({ ok: false, code: 'ERR_PARAM', command: a[0] });
  });

  test.each([
    ['--max-sessions 0', ['--max-sessions', '0']],
    ['--max-sessions abc', ['--max-sessions', 'abc']],
    ['--idle-timeout -1', ['--idle-timeout', '-1']],
  ])('serve %s: exit 2 before listening', async (_what, extra) => {
    const r = await cli('serve', '--volume', `v=${basis}`, ...extra);
    expect(r.code).toBe(2);
    expect(oneLine(r)).toContain(extra[0]!);
  });

  test('serve takes neither --json nor --progress', async () => {
    for (const flag of ['--json', '--progress']) {
      const r = await cli('serve', flag, '--volume', `v=${basis}`);
      expect(r.code).toBe(2);
      expect(oneLine(r)).toContain('Unknown argument');
    }
  });

  test('an unknown command under --json is JSON too', async () => {
    const r = await cli('--json', 'frobnicate');
    expect(r.code).toBe(2);
    expect(json(r)).toMatchObject({ ok: false, code: 'ERR_PARAM' });
  });
});

describe('--version', () => {
  const want = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
  test.each([
    ['the bundle', BIN],
    ['the unbundled build', MAIN],
  ])("%s prints resync's own version from any working directory", async (_what, entry) => {
    const other = await mkdtemp(join(tmpdir(), 'resync-elsewhere-'));
    // A package.json of another project in the working directory must not be read.
    await writeFile(join(other, 'package.json'), JSON.stringify({ name: 'other', version: '9.9.9' }));
    for (const cwd of [other, tmpdir(), ROOT]) {
      const r = await run(entry, ['--version'], { cwd });
      expect(r.code).toBe(0);
      expect(r.stdout.toString().trim()).toBe(want);
    }
    await rm(other, { recursive: true, force: true });
  });
});

describe('help', () => {
  const COMMANDS = ['signature', 'delta', 'patch', 'recover', 'serve', 'push', 'pull', 'verify', 'demo'];

  /** Option lines with no description: the flag is followed directly by its [type] or nothing. */
  function undescribed(help: string): string[] {
    return help
      .split('\n')
      // The option column: "  -b, --block-size" or "      --json"; deeper lines continue a description.
      .filter((l) => /^( {2}-\w, | {6})--[\w-]+/.test(l))
      .filter((l) => {
        const rest = l.replace(/^( {2}-\w, | {6})--[\w-]+/, '').trim();
        return rest === '' || rest.startsWith('[');
      });
  }

  test.each(COMMANDS)('%s --help: examples, every option described, no word cut at 40, 60 and 100 columns', async (cmd) => {
    for (const cols of ['40', '60', '100']) {
      const r = await run(BIN, [cmd, '--help'], { env: { ...process.env, COLUMNS: cols } });
      expect(r.code).toBe(0);
      const help = r.stdout.toString();
      expect(help).toContain('Examples:');
      expect(undescribed(help), `${cmd} at ${cols} columns`).toEqual([]);
      for (const l of help.split('\n')) expect(l.length, l).toBeLessThanOrEqual(Number(cols));
      // Words cut in half would leave fragments like "te" + "rminal"; the phrases survive whole once whitespace is folded.
      const flat = help.replace(/\s+/g, ' ');
      expect(flat).toContain('print nothing on success');
      if (cmd !== 'serve') expect(flat).toContain('show a progress bar on stderr (default: when stderr is a terminal)');
    }
  });

  test('the unbundled build wraps at words too', async () => {
    const r = await run(MAIN, ['push', '--help'], { env: { ...process.env, COLUMNS: '50' } });
    expect(r.code).toBe(0);
    expect(r.stdout.toString().replace(/\s+/g, ' ')).toContain('report what would be sent; nothing is written on either side');
  });

  test('serve --help offers neither --json nor --progress, and describes --max-sessions', async () => {
    const help = (await cli('serve', '--help')).stdout.toString();
    expect(help).not.toContain('--json');
    expect(help).not.toContain('--progress');
    expect(help.replace(/\s+/g, ' ')).toMatch(/--max-sessions most sessions served at once/);
  });

  test('push and pull describe -b', async () => {
    for (const cmd of ['push', 'pull']) {
      const help = (await cli(cmd, '--help')).stdout.toString();
      expect(help).toMatch(/-b, --block-size\s+block size/);
    }
  });
});

describe('hints', () => {
  test('an rdiff signature without --format rdiff', async () => {
    const rsig = join(d, 'hint-rdiff.sig');
    expect((await cli('signature', '-q', '--format', 'rdiff', basis, rsig)).code).toBe(0);
    const r = await cli('--json', 'delta', rsig, target, join(d, 'hint.delta'));
    expect(r.code).toBe(3);
    expect(oneLine(r)).toContain(`hint: ${rsig} is an rdiff signature: add --format rdiff`);
    expect(json(r)).toMatchObject({ code: 'ERR_BAD_MAGIC', hint: `${rsig} is an rdiff signature: add --format rdiff` });
  });

  test('a resync delta with --format rdiff', async () => {
    const r = await cli('patch', '--format', 'rdiff', basis, delta, join(d, 'hint.img'));
    expect(r.code).toBe(3);
    expect(oneLine(r)).toContain(`hint: ${delta} is a resync delta: leave out --format rdiff`);
  });

  test('SIGNATURE and NEWFILE swapped', async () => {
    const r = await cli('delta', target, sig, join(d, 'swapped.delta'));
    expect(r.code).toBe(3);
    expect(oneLine(r)).toContain(`NEWFILE ${sig} is a resync signature: the arguments look swapped`);
    expect(existsSync(join(d, 'swapped.delta'))).toBe(false);
  });

  test('no server on the port (ECONNREFUSED)', async () => {
    const port = await new Promise<number>((res) => {
      const s = createServer().listen(0, '127.0.0.1', () => {
        const p = (s.address() as { port: number }).port;
        s.close(() => res(p));
      });
    });
    const secret = join(d, 'secret-refused');
    await writeFile(secret, randomBytes(24).toString('base64'), { mode: 0o600 });
    const r = await cli('push', '--secret-file', secret, basis, `127.0.0.1:${port}/v`);
    expect(r.code).toBe(7);
    expect(oneLine(r)).toContain(`hint: nothing is listening on 127.0.0.1:${port}: is 'resync serve' running there`);
  });

  test('a wrong secret', async () => {
    const vol = join(d, 'vol.img');
    await copyFile(basis, vol);
    const server = new ResyncServer({
      host: '127.0.0.1',
      port: 0,
      secret: randomBytes(32),
      volumes: { v: { path: vol, writable: true } },
      maxSessions: 4,
      idleTimeoutMs: 10_000,
      handshakeTimeoutMs: 10_000,
    });
    const port = await server.listen();
    try {
      const wrong = join(d, 'secret-wrong');
      await writeFile(wrong, randomBytes(24).toString('base64'), { mode: 0o600 });
      const r = await cli('push', '--secret-file', wrong, target, `127.0.0.1:${port}/v`);
      expect(r.code).toBe(8);
      expect(oneLine(r)).toContain('hint: check that --secret-file (or RESYNC_SECRET_FILE) holds the same secret as the server');
    } finally {
      await server.close();
    }
  });
});

describe('- for standard input and output', () => {
  test('signature - -, delta SIG - -, patch BASIS - -: the same bytes as with files, verified', async () => {
    const s = await run(BIN, ['signature', '-q', '-', '-'], { stdin: await readFile(basis) });
    expect(s.code, s.stderr).toBe(0);
    expect(s.stdout.subarray(0, 4).toString('latin1')).toBe('RSSG');
    const sigFile = join(d, 'stdin.sig');
    await writeFile(sigFile, s.stdout);
    const dl = await run(BIN, ['delta', '-q', sigFile, '-', '-'], { stdin: await readFile(target) });
    expect(dl.code, dl.stderr).toBe(0);
    const p = await run(BIN, ['patch', '-q', basis, '-', '-'], { stdin: dl.stdout });
    expect(p.code, p.stderr).toBe(0);
    expect(p.stdout.equals(await readFile(target))).toBe(true);
  });

  test('without -q the summary goes to stderr: standard output holds the data alone', async () => {
    const s = await run(BIN, ['signature', '-', '-'], { stdin: await readFile(basis) });
    expect(s.code, s.stderr).toBe(0);
    expect(s.stderr).toContain('signature: done');
    const dec = new SignatureFileDecoder();
    dec.push(s.stdout);
    expect(dec.end().signature.params.imageSize).toBe((await stat(basis)).size);
    const p = await run(BIN, ['patch', basis, delta, '-']);
    expect(p.code, p.stderr).toBe(0);
    expect(p.stderr).toContain('patch: done');
    expect(p.stdout.equals(await readFile(target))).toBe(true);
  });

  test('patch to standard output writes nothing there when verification fails', async () => {
    const other = join(d, 'other-basis.img');
    await writeFile(other, randomBytes((await stat(basis)).size));
    const p = await run(BIN, ['patch', other, delta, '-']);
    expect(p.code).toBe(4);
    expect(p.stdout.length).toBe(0);
  });

  test.each([
    ['BASIS of patch', ['patch', '-', 'DELTA', 'out.img'], 'cannot be - (standard input)'],
    ['--in-place to standard output', ['patch', '--in-place', 'BASIS', 'DELTA', '-'], 'OUTPUT cannot be -'],
    ['two inputs from standard input', ['delta', '-', '-', 'x.delta'], 'cannot both be -'],
    ['--json with standard output', ['signature', '--json', 'BASIS', '-'], '--json prints on standard output'],
  ])('refused: %s', async (_what, args, msg) => {
    const a = args.map((x) => (x === 'BASIS' ? basis : x === 'DELTA' ? delta : x.includes('.') && x !== '-' ? join(d, x) : x));
    const r = await cli(...a);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(msg);
  });
});
