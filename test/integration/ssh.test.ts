/**
 * push and pull over ssh against a real OpenSSH server: the test starts its
 * own sshd on 127.0.0.1 with a generated host key and user keys in a temp
 * directory (no system configuration is read or changed), and the CLI
 * (bin/resync.js, so `npm run build` first when running this file alone)
 * reaches it through --rsh. The far side runs this checkout's CLI through
 * --remote-resync, or through a forced command with --allow.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { runCli, type CliRun } from '../helpers/cli.js';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { appendFile, copyFile, mkdir, mkdtemp, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { hashImage } from '../../src/api/files.js';
import { journalPathFor } from '../../src/io/journal.js';
import { makePair, randomBytes, writeImage } from '../../src/testing/workload.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const CLI = join(ROOT, 'bin/resync.js');
const SSHD = '/usr/sbin/sshd';
const MiB = 1024 * 1024;

const cli = (...args: string[]): Promise<CliRun> => runCli(CLI, args, { timeoutMs: 90_000, maxBuffer: 16 * 1024 * 1024 });

function json(r: CliRun): Record<string, unknown> {
  const lines = r.stdout.trim().split('\n');
  expect(lines, `stdout: ${r.stdout} stderr: ${r.stderr}`).toHaveLength(1);
  return JSON.parse(lines[0]!) as Record<string, unknown>;
}

const sha = async (p: string): Promise<string> => Buffer.from(await hashImage(p)).toString('hex');

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      s.close(() => resolve(typeof a === 'object' && a ? a.port : 0));
    });
  });
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe.skipIf(!existsSync(SSHD))('over ssh (a real sshd on 127.0.0.1)', () => {
  let dir: string;
  let sshd: ChildProcess;
  let port: number;
  let sshdLog = '';
  const user = userInfo().username;
  const remote = (p: string): string => `${user}@127.0.0.1:${p}`;
  const REMOTE_RESYNC = `${process.execPath} ${CLI}`;
  /** The ssh command with `key`; the known-hosts file is not read or written. */
  const rsh = (key: string): string =>
    `ssh -F /dev/null -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o IdentitiesOnly=yes -o IdentityAgent=none -o LogLevel=ERROR -i ${join(dir, key)} -p ${port}`;
  /** Arguments for an ssh push or pull with the unrestricted key. */
  const viaSsh = (key = 'user_key'): string[] => ['--rsh', rsh(key), '--remote-resync', REMOTE_RESYNC];

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'resync-ssh-'));
    for (const k of ['host_key', 'user_key', 'forced_key', 'wrong_key']) execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', k, '-f', join(dir, k)]);
    await mkdir(join(dir, 'images'));
    await mkdir(join(dir, 'outside'));
    const pub = (k: string): string => readFileSync(join(dir, `${k}.pub`), 'utf8').trim();
    // The forced key may only run the stdio server under images/, whatever the client asks for.
    await writeFile(
      join(dir, 'authorized_keys'),
      `${pub('user_key')}\ncommand="${process.execPath} ${CLI} serve --stdio --allow ${join(dir, 'images')}",no-pty,no-port-forwarding ${pub('forced_key')}\n`,
    );
    port = await freePort();
    await writeFile(
      join(dir, 'sshd_config'),
      [
        `Port ${port}`,
        'ListenAddress 127.0.0.1',
        `HostKey ${join(dir, 'host_key')}`,
        `PidFile ${join(dir, 'sshd.pid')}`,
        `AuthorizedKeysFile ${join(dir, 'authorized_keys')}`,
        'UsePAM no',
        'StrictModes no',
        'PasswordAuthentication no',
        'KbdInteractiveAuthentication no',
        'PermitRootLogin prohibit-password',
        '',
      ].join('\n'),
    );
    // sshd started by root needs its privilege-separation directory, which the
    // system's own sshd service makes at boot (an empty runtime directory).
    if (process.getuid?.() === 0 && !existsSync('/run/sshd')) mkdirSync('/run/sshd', { mode: 0o755 });
    sshd = spawn(SSHD, ['-D', '-e', '-f', join(dir, 'sshd_config')], { stdio: ['ignore', 'ignore', 'pipe'] });
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`sshd did not start: ${sshdLog}`)), 15_000);
      sshd.stderr!.on('data', (d: Buffer) => {
        sshdLog += d.toString();
        if (sshdLog.includes('Server listening')) {
          clearTimeout(t);
          resolve();
        }
      });
      sshd.once('exit', (c) => {
        clearTimeout(t);
        reject(new Error(`sshd exited (${c}): ${sshdLog}`));
      });
    });
  }, 30_000);

  afterAll(async () => {
    sshd?.kill('SIGTERM');
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  test('push creates the image, then sends only what changed; pull brings it back', async () => {
    const { basis, target } = await makePair(await mkdtemp(join(dir, 'pair-')), 'scattered', 6 * MiB, 21);
    const vol = join(dir, 'images', 'vm.img');
    const first = await cli('push', '--json', ...viaSsh(), basis, remote(vol));
    expect(first.code, first.stderr).toBe(0);
    expect(await sha(vol)).toBe(await sha(basis));
    const second = await cli('push', '--json', ...viaSsh(), target, remote(vol));
    expect(second.code, second.stderr).toBe(0);
    const s = json(second);
    expect(s).toMatchObject({ ok: true, verified: true, imageSize: 6 * MiB });
    expect(s.matchedBytes as number).toBeGreaterThan(3 * MiB);
    expect(await sha(vol)).toBe(await sha(target));
    expect(existsSync(journalPathFor(vol))).toBe(false);

    // pull in place over the older copy: only the changes come back
    const local = join(dir, 'local.img');
    await copyFile(basis, local);
    const pulled = await cli('pull', '--json', ...viaSsh(), remote(vol), local);
    expect(pulled.code, pulled.stderr).toBe(0);
    const p = json(pulled);
    expect(p).toMatchObject({ ok: true, verified: true });
    expect(p.bytesReceived as number).toBeLessThan(3 * MiB);
    expect(await sha(local)).toBe(await sha(target));

    // verify and a dry run go the same way; neither writes
    const same = await cli('verify', '--json', ...viaSsh(), local, remote(vol));
    expect(same.code, same.stderr).toBe(0);
    expect(json(same)).toMatchObject({ ok: true, identical: true });
    const differs = await cli('verify', '--json', ...viaSsh(), basis, remote(vol));
    expect(differs.code, differs.stderr).toBe(10);
    const volSha = await sha(vol);
    const dry = await cli('push', '--json', '--dry-run', ...viaSsh(), basis, remote(vol));
    expect(dry.code, dry.stderr).toBe(0);
    expect(json(dry).literalBytes as number).toBeGreaterThan(0);
    expect(await sha(vol)).toBe(volSha);

    // and into a new file
    const fresh = join(dir, 'fresh.img');
    const again = await cli('pull', '--json', ...viaSsh(), remote(vol), fresh);
    expect(again.code, again.stderr).toBe(0);
    expect(await sha(fresh)).toBe(await sha(target));
    // Each run logs in anew (seconds each on a loaded machine): generous limits.
  }, 240_000);

  test('push to several ssh replicas: each updated from one read; one that cannot open its path fails alone (exit 12)', async () => {
    const src = join(dir, 'fan-src.img');
    await writeFile(src, randomBytes(9, 5 * MiB));
    const [a, b] = [join(dir, 'images', 'fan-a.img'), join(dir, 'images', 'fan-b.img')];
    await writeFile(a, Buffer.alloc(0));
    await writeFile(b, randomBytes(10, 5 * MiB));
    const ok = await cli('push', '--json', ...viaSsh(), src, remote(a), remote(b));
    expect(ok.code, ok.stderr).toBe(0);
    const o = json(ok);
    expect(o).toMatchObject({ ok: true, hashPasses: 1 });
    expect((o.replicas as Record<string, unknown>[]).map((r) => r.remote)).toEqual([remote(a), remote(b)]);
    for (const f of [a, b]) expect(await sha(f)).toBe(await sha(src));
    const missing = join(dir, 'no-such-dir', 'x.img');
    const partial = await cli('push', '--json', ...viaSsh(), src, remote(a), remote(missing));
    expect(partial.code, partial.stderr).toBe(12);
    const p = json(partial);
    expect(p).toMatchObject({ ok: false, code: 'ERR_PARTIAL' });
    expect((p.replicas as Record<string, unknown>[]).map((r) => r.ok)).toEqual([true, false]);
    expect(await sha(a)).toBe(await sha(src));
    expect(existsSync(missing)).toBe(false);
  }, 120_000);

  /**
   * Push `size` bytes of random data (every byte literal) into an empty
   * `vol` over ssh and kill ssh once the far side has applied 4 MiB of it
   * under its journal; resolves with the source and the journal's path.
   */
  async function cutPush(vol: string, size: number, seed: number): Promise<{ src: string; jpath: string }> {
    const SIZE = size;
    const src = join(dir, `${seed}-src.img`);
    await writeFile(src, Buffer.alloc(0));
    for (let off = 0; off < SIZE; off += 4 * MiB) await appendFile(src, randomBytes(seed, 4 * MiB, off));
    await writeFile(vol, Buffer.alloc(0));
    const pidFile = join(dir, 'ssh.pid');
    await rm(pidFile, { force: true });
    // ssh through a shell that records its pid, so the test can kill ssh itself.
    const recording = `sh -c 'echo $$ > ${pidFile}; exec "$@"' sh ${rsh('user_key')}`;
    const cut = cli('push', '--json', '--bwlimit', '2M', '--rsh', recording, '--remote-resync', REMOTE_RESYNC, src, remote(vol));
    const jpath = journalPathFor(vol);
    const deadline = Date.now() + 60_000;
    // Kill once the far side has applied 4 MiB of the delta under its journal (the volume grows as it is written).
    const applied = async (): Promise<number> => (existsSync(jpath) ? ((await stat(vol).catch(() => null))?.size ?? 0) : 0);
    while (Date.now() < deadline && (await applied()) < 4 * MiB) await sleep(25);
    expect(await applied()).toBeGreaterThanOrEqual(4 * MiB);
    expect(await applied()).toBeLessThan(SIZE);
    process.kill(Number((await readFile(pidFile, 'utf8')).trim()), 'SIGKILL');
    const r = await cut;
    expect(r.code, `${r.stdout} ${r.stderr}`).toBe(7);
    expect(json(r)).toMatchObject({ ok: false, code: 'ERR_CONNECTION' });
    expect(existsSync(jpath)).toBe(true);
    return { src, jpath };
  }

  /** Run until the far side has let go of the volume after a cut (it answers ERR_BUSY until it notices the dead channel). */
  async function whenFree(run: () => Promise<CliRun>): Promise<CliRun> {
    for (let i = 0; ; i++) {
      const r = await run();
      if (r.code !== 7 || i >= 20 || !r.stdout.includes('ERR_BUSY')) return r;
      await sleep(500);
    }
  }

  test('a push cut by killing ssh resumes from the journal on the far side', async () => {
    const SIZE = 24 * MiB;
    const vol = join(dir, 'images', 'big.img');
    const { src, jpath } = await cutPush(vol, SIZE, 5);

    // The far side notices the dead channel and lets go of the volume; until then a retry is told ERR_BUSY.
    const retry = await whenFree(() => cli('push', '--json', ...viaSsh(), src, remote(vol)));
    expect(retry.code, retry.stderr).toBe(0);
    const s = json(retry);
    expect(s.resumedFrom as number).toBeGreaterThan(1 * MiB);
    expect(s.bytesSent as number).toBeLessThan(SIZE - (s.resumedFrom as number) + 2 * MiB);
    expect(await sha(vol)).toBe(await sha(src));
    expect(existsSync(jpath)).toBe(false);
  }, 180_000);

  test('recover over ssh rolls back a cut push on the far side, by path and by a named remote; --allow limits it too', async () => {
    const vol = join(dir, 'images', 'cut.img');
    const { jpath } = await cutPush(vol, 12 * MiB, 7);
    // A pull is refused while the journal is there, and told the ssh form of recover (not HOST:PORT/VOLUME).
    let busy: CliRun | null = null;
    for (let i = 0; i < 20; i++) {
      busy = await cli('pull', '--json', ...viaSsh(), remote(vol), join(dir, 'cut-pulled.img'));
      if (/did not finish/.test(String(json(busy).message))) break;
      await sleep(500);
    }
    expect(json(busy!)).toMatchObject({ ok: false, code: 'ERR_BUSY' });
    expect(json(busy!).message).toContain(`roll it back with 'resync recover [USER@]HOST:${vol}'`);
    const r = await whenFree(() => cli('recover', '--json', ...viaSsh(), remote(vol)));
    expect(r.code, r.stderr).toBe(0);
    expect(json(r)).toMatchObject({ ok: true, outcome: 'rolled-back', imageSize: 0, verified: true });
    expect((await stat(vol)).size).toBe(0);
    expect(existsSync(jpath)).toBe(false);

    // The same through the client config; nothing is left to do now.
    const config = join(dir, 'client.json');
    await writeFile(config, JSON.stringify({ remotes: { dr: { ssh: `${user}@127.0.0.1`, dir: join(dir, 'images'), rsh: rsh('user_key'), remoteResync: REMOTE_RESYNC } } }));
    const again = await runCli(CLI, ['recover', '--json', '@dr/cut.img'], { timeoutMs: 90_000, env: { RESYNC_CONFIG: config } });
    expect(again.code, again.stderr).toBe(0);
    expect(json(again)).toMatchObject({ ok: true, outcome: 'nothing' });
    expect(json(again).note).toContain('no unfinished update to settle: the volume is as');

    // The forced command's --allow applies to recover as to push: outside it, refused before anything is opened.
    const outside = join(dir, 'outside', 'x.img');
    await writeFile(outside, Buffer.alloc(4096, 1));
    const refused = await cli('recover', '--json', '--rsh', rsh('forced_key'), remote(outside));
    expect(refused.code).not.toBe(0);
    expect(json(refused)).toMatchObject({ ok: false, code: 'ERR_PERMISSION' });
    const inside = await cli('recover', '--json', '--rsh', rsh('forced_key'), remote(vol));
    expect(inside.code, inside.stderr).toBe(0);
    expect(json(inside)).toMatchObject({ ok: true, outcome: 'nothing' });
  }, 180_000);

  test('a forced command with --allow serves paths under its directory and refuses the rest before opening them', async () => {
    const img = join(dir, 'forced-src.img');
    await writeImage(img, 1 * MiB, 9);
    // The forced command ignores the client's command line: the path travels in the protocol.
    const forced = ['--rsh', rsh('forced_key')];
    const ok = await cli('push', '--json', ...forced, img, remote(join(dir, 'images', 'allowed.img')));
    expect(ok.code, ok.stderr).toBe(0);
    expect(await sha(join(dir, 'images', 'allowed.img'))).toBe(await sha(img));
    // a relative path is taken from the allowed directory
    const rel = await cli('pull', '--json', ...forced, remote('allowed.img'), join(dir, 'rel.img'));
    expect(rel.code, rel.stderr).toBe(0);
    expect(await sha(join(dir, 'rel.img'))).toBe(await sha(img));

    const outside = join(dir, 'outside', 'secret.img');
    await writeFile(outside, Buffer.alloc(4096, 7));
    const before = await sha(outside);
    await symlink(outside, join(dir, 'images', 'link.img'));
    const attempts: [string, string][] = [
      ['push', outside],
      ['push', join(dir, 'images', '..', 'outside', 'secret.img')],
      ['push', '../outside/secret.img'],
      ['push', join(dir, 'images', 'link.img')],
      ['push', join(dir, 'outside', 'new.img')],
      ['pull', '../outside/secret.img'],
    ];
    for (const [mode, path] of attempts) {
      const r = mode === 'push' ? await cli('push', '--json', ...forced, img, remote(path)) : await cli('pull', '--json', ...forced, remote(path), join(dir, 'stolen.img'));
      expect(r.code, `${mode} ${path}: ${r.stderr}`).toBe(8);
      const j = json(r);
      expect(j).toMatchObject({ ok: false, code: 'ERR_PERMISSION' });
      expect(j.message).toMatch(/outside the directories this server allows/);
    }
    expect(await sha(outside)).toBe(before);
    expect(existsSync(join(dir, 'outside', 'new.img'))).toBe(false);
    expect(existsSync(journalPathFor(outside))).toBe(false);
    // nothing was pulled: the local file holds no remote data
    expect((await stat(join(dir, 'stolen.img')).catch(() => null))?.size ?? 0).toBe(0);
  }, 240_000);

  test('a key the server does not know: a clear ERR_AUTH, exit 8, nothing written', async () => {
    const img = join(dir, 'wrong-src.img');
    await writeImage(img, 64 * 1024, 3);
    const target = join(dir, 'images', 'wrong.img');
    const r = await cli('push', '--json', ...viaSsh('wrong_key'), img, remote(target));
    expect(r.code, r.stderr).toBe(8);
    const j = json(r);
    expect(j).toMatchObject({ ok: false, code: 'ERR_AUTH' });
    expect(j.message).toMatch(/ssh .*failed \(exit status 255\).*Permission denied/);
    expect(existsSync(target)).toBe(false);
  }, 60_000);

  test('a far side without resync: a clear error naming --remote-resync', async () => {
    const img = join(dir, 'missing-src.img');
    await writeImage(img, 64 * 1024, 4);
    const r = await cli('push', '--json', '--rsh', rsh('user_key'), '--remote-resync', '/nonexistent/resync', img, remote(join(dir, 'images', 'm.img')));
    expect(r.code).toBe(7);
    expect(json(r).message).toMatch(/could not run "\/nonexistent\/resync".*--remote-resync/);
  }, 60_000);
});

describe('ssh remotes on the command line', () => {
  test('HOST:PORT/VOLUME stays TCP; --rsh with it is refused', async () => {
    const r = await cli('push', '--json', '--rsh', 'ssh', CLI, 'localhost:7873/vm1');
    expect(r.code).toBe(2);
    expect(json(r).message).toMatch(/--rsh and --remote-resync need an ssh remote/);
  });

  test('a far side that says nothing: ERR_TIMEOUT after --timeout, not a far side that "exited"', async () => {
    // The "ssh" never answers; the client's timeout, whose SIGTERM ends it, is what is reported.
    const r = await cli('push', '--json', '--timeout', '1', '--rsh', "sh -c 'exec sleep 30' silent", CLI, 'host:/srv/x.img');
    expect(r.code).toBe(7);
    expect(json(r)).toMatchObject({ ok: false, code: 'ERR_TIMEOUT' });
  });

  test('a far side that cannot open the path says why (there is no server log over ssh to see)', async () => {
    // The "ssh" runs the command it is given on this machine: the stdio server itself.
    const local = "sh -c 'eval \"$2\"' local";
    const d = await mkdtemp(join(tmpdir(), 'resync-ssh-dir-'));
    try {
      const img = join(d, 'src.img');
      await writeImage(img, 64 * 1024, 9);
      await mkdir(join(d, 'adir'));
      const r = await cli('push', '--json', '--rsh', local, '--remote-resync', `${process.execPath} ${CLI}`, img, `host:${join(d, 'adir')}`);
      expect(r.code).toBe(5);
      const j = json(r);
      expect(j).toMatchObject({ ok: false, code: 'ERR_IO' });
      expect(j.message).not.toMatch(/see the server log/);
      expect(j.message).toMatch(/EISDIR|directory/);
    } finally {
      await rm(d, { recursive: true, force: true });
    }
  });

  test('a pull of a path the far side does not have: ERR_NOT_FOUND saying so, not that nothing was pushed to a volume', async () => {
    const local = "sh -c 'eval \"$2\"' local";
    const d = await mkdtemp(join(tmpdir(), 'resync-ssh-nf-'));
    try {
      const r = await cli('pull', '--json', '--rsh', local, '--remote-resync', `${process.execPath} ${CLI}`, `host:${join(d, 'no-such.img')}`, join(d, 'local.img'));
      const j = json(r);
      expect(j).toMatchObject({ ok: false, code: 'ERR_NOT_FOUND' });
      expect(j.message).toMatch(/no such file: check the path/);
      expect(j.message).not.toMatch(/nothing has been pushed/);
    } finally {
      await rm(d, { recursive: true, force: true });
    }
  });

  test('a far side speaking another protocol version: ERR_VERSION (exit 3), not a far side that "exited"', async () => {
    // The "ssh" runs a server that sends protocol version 2's preamble and then reads until its input ends.
    const fake = "sh -c 'printf \"RSWP\\\\000\\\\002\\\\000\\\\000\"; exec cat >/dev/null' v2";
    const r = await cli('push', '--json', '--rsh', fake, CLI, 'host:/srv/x.img');
    expect(json(r)).toMatchObject({ ok: false, code: 'ERR_VERSION' });
    expect(json(r).message).toMatch(/version 2/);
    expect(r.code).toBe(3);
  });

  test('--secret-file or --tls with an ssh remote is refused', async () => {
    const a = await cli('push', '--json', '--tls', CLI, 'host:/srv/x.img');
    expect(a.code).toBe(2);
    expect(json(a).message).toMatch(/--tls does not apply to an ssh remote/);
  });
});
