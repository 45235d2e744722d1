/**
 * Server volumes on NBD exports (net/nbd-volume.ts) against qemu-nbd: a
 * push patches a qcow2 export in place under its undo journal in the
 * server's state directory, a pull and a verify read it, a server killed
 * mid-push leaves the export rolled back on the next push or by a remote
 * recover, one export takes one writer at a time, and a volume spec that is
 * wrong is refused at start.
 *
 * The kill tests run the built CLI (dist/).
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { connect, createServer as createNetServer } from 'node:net';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import { pull, push, pushToReplicas, recoverRemote } from '../../src/api/net.js';
import { verifyRemote } from '../../src/api/verify.js';
import { checkVolumes, ConfigError, readServerConfig } from '../../src/net/config.js';
import { parseVolumes } from '../../src/cli/commands/net.js';
import { resolveRequested } from '../../src/net/allow.js';
import { nbdJournalPath } from '../../src/io/nbd/undo.js';
import { openNbdImage } from '../../src/io/nbd/image.js';
import { dial } from '../../src/net/connection.js';
import { clientProof, newNonce } from '../../protocol/auth.js';
import { MsgType, PROTOCOL_VERSION } from '../../protocol/constants.js';
import type { ReadyMsg } from '../../protocol/messages.js';
import { closeServers, startServer, type TestServer } from '../helpers/server.js';
import { runCli } from '../helpers/cli.js';
import { hasQemu, qcow2Disk, qemuImg, qemuIo, sameContent, startNbd, stopAllNbd, type NbdExport } from '../helpers/qemu.js';

const CLI = join(fileURLToPath(new URL('../..', import.meta.url)), 'bin/resync.js');
const MiB = 1 << 20;
const SIZE = 24;

let dir: string;
const servers: TestServer[] = [];
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'resync-nbdvol-'));
});
afterAll(async () => {
  await stopAllNbd();
  await closeServers(servers);
  await rm(dir, { recursive: true, force: true });
});

/** A qcow2 recovery disk of SIZE MiB with data of its own, and a raw copy of its content. */
function recoveryDisk(name: string): { q: string; raw: string } {
  return qcow2Disk(dir, name, SIZE, 'write -P 0x55 0 3M', `write -P 0x66 ${SIZE - 5}M 4M`);
}

/** A raw primary of SIZE MiB: random data with a hole in the middle. */
async function primary(name: string): Promise<string> {
  const p = join(dir, `${name}.raw`);
  const b = randomBytes(SIZE * MiB);
  b.fill(0, 8 * MiB, 12 * MiB);
  await writeFile(p, b);
  return p;
}

/** A server on 127.0.0.1 with `volumes`, its state directory its own. */
async function server(volumes: Parameters<typeof startServer>[0], opts: Parameters<typeof startServer>[1] = {}): Promise<TestServer> {
  const s = await startServer(volumes, opts);
  servers.push(s);
  return s;
}

const client = (s: TestServer, volume = 'rec', extra: Record<string, unknown> = {}) => ({ host: '127.0.0.1', port: s.port, secret: s.secret, volume, ...extra });

/** Every file under `d` whose name says it is a signature cache or a dirty-push marker. */
async function strayFiles(d: string): Promise<string[]> {
  const all = (await readdir(d, { recursive: true })) as string[];
  return all.filter((f) => /resync-sig|resync-dirty/.test(f));
}

describe.skipIf(!hasQemu)('an NBD export as a served volume', () => {
  test('a push patches a qcow2 export in place and verifies; the next push sends little; no signature cache is written anywhere', async () => {
    const d = recoveryDisk('push');
    const nbd = await startNbd(dir, d.q);
    const s = await server({ rec: { path: nbd.uri, writable: true } });
    const src = await primary('push-src');
    const r = await push(src, client(s));
    expect(r).toMatchObject({ verified: true, imageSize: SIZE * MiB });
    // Nothing was left in the state directory but the export's lock file.
    const state = join(s.dir, 'state');
    expect(existsSync(nbdJournalPath(state, nbd.uri))).toBe(false);
    // An export has nothing beside it to keep a signature cache in: none anywhere.
    expect(await strayFiles(dir)).toEqual([]);
    expect(await strayFiles(s.dir)).toEqual([]);
    expect(existsSync(join(process.cwd(), 'nbd+unix:'))).toBe(false);
    // A small change is a small push (64 KiB changed: the literals stay far below the image).
    const b = await readFile(src);
    b.fill(0xee, 5 * MiB, 5 * MiB + 65536);
    await writeFile(src, b);
    const r2 = await push(src, client(s));
    expect(r2.literalBytes).toBeLessThan(MiB);
    await nbd.stop();
    expect(sameContent(d.q, src)).toBe(true);
  }, 120_000);

  test('over TCP (nbd://127.0.0.1:PORT/EXPORT), a push into it; then a pull and a verify of it as a read-only volume', async () => {
    const d = recoveryDisk('tcp');
    const nbd = await startNbd(dir, d.q, { tcp: true, shared: 4 });
    expect(nbd.uri).toMatch(/^nbd:\/\/127\.0\.0\.1:\d+\/disk$/);
    const s = await server({ rec: { path: nbd.uri, writable: true }, ro: { path: nbd.uri, writable: false } });
    const src = await primary('tcp-src');
    expect((await push(src, client(s))).verified).toBe(true);
    // Pulled back into a file by its guest-visible content, and verified from the read-only name.
    const back = join(dir, 'tcp-back.raw');
    expect((await pull(back, client(s, 'ro'))).verified).toBe(true);
    expect((await readFile(back)).equals(await readFile(src))).toBe(true);
    const v = await verifyRemote(src, client(s, 'ro'));
    expect(v.identical).toBe(true);
    await expect(push(src, client(s, 'ro'))).rejects.toMatchObject({ code: 'ERR_PERMISSION' });
    await nbd.stop();
    expect(sameContent(d.q, src)).toBe(true);
  }, 120_000);

  test('a served pull and verify read only the data of the export: the zero runs its base:allocation reports are skipped', async () => {
    const { q, raw } = qcow2Disk(dir, 'sparse', 64, 'write -P 0x5a 1M 512k', 'write -P 0x6b 40M 512k');
    const nbd = await startNbd(dir, q, { readOnly: true, shared: 4 });
    // A unix socket in front of qemu-nbd's, counting what the export sends.
    const real = /socket=(.*)$/.exec(nbd.uri)![1]!;
    const front = join(dir, 'counting.sock');
    let fromExport = 0;
    const proxy = createNetServer((c) => {
      const up = connect(real);
      up.on('data', (b: Buffer) => (fromExport += b.length));
      c.pipe(up).pipe(c);
      c.on('error', () => up.destroy());
      up.on('error', () => c.destroy());
    });
    await new Promise<void>((r) => proxy.listen(front, r));
    try {
      const s = await server({ ro: { path: `nbd+unix:///disk?socket=${front}`, writable: false } });
      const back = join(dir, 'sparse-back.raw');
      expect((await pull(back, client(s, 'ro'))).verified).toBe(true);
      expect((await readFile(back)).equals(await readFile(raw))).toBe(true);
      expect((await verifyRemote(raw, client(s, 'ro'))).identical).toBe(true);
      // 1 MiB of data, read by the pull's hash pass and delta scan and by the verify (3 MiB, and the protocol's
      // own bytes): far below the 64 MiB each would read of an export whose zero runs were read too.
      expect(fromExport).toBeLessThan(8 * MiB);
    } finally {
      await new Promise<void>((r) => proxy.close(() => r()));
    }
  }, 60_000);

  test('a source larger than the export is refused (ERR_PARAM) and the export is untouched', async () => {
    const d = recoveryDisk('small');
    const nbd = await startNbd(dir, d.q);
    const s = await server({ rec: { path: nbd.uri, writable: true } });
    const big = join(dir, 'big.raw');
    await writeFile(big, randomBytes((SIZE + 1) * MiB));
    await expect(push(big, client(s))).rejects.toMatchObject({ code: 'ERR_PARAM', message: expect.stringMatching(/volume rec is 25165824 bytes .*does not grow/) });
    await nbd.stop();
    expect(sameContent(d.q, d.raw)).toBe(true);
  }, 60_000);

  test('a source smaller than the export: the export keeps its tail, and the pushing client is told so (a Notice), with no server path in it', async () => {
    const d = recoveryDisk('tail');
    const nbd = await startNbd(dir, d.q);
    const s = await server({ rec: { path: nbd.uri, writable: true } });
    const small = join(dir, 'small.raw');
    await writeFile(small, randomBytes((SIZE - 8) * MiB));
    const notes: string[] = [];
    const r = await push(small, client(s, 'rec', { onNote: (n: string) => notes.push(n) }));
    expect(r.verified).toBe(true);
    expect(notes).toEqual([expect.stringMatching(/^the server says: volume rec is 25165824 bytes and the pushed image 16777216: its last 8388608 bytes are left as they were \(the NBD export does not shrink\).*a verify of the whole volume will find them different/)]);
    expect(notes[0]).not.toContain(dir);
    // The server's own log names the export.
    expect(s.events.some((e) => e.msg.includes('its last 8388608 bytes are left as they were'))).toBe(true);
    await nbd.stop();
  }, 60_000);

  test('one writer per export: a second push under the same name, or under another spelling of the export, is ERR_BUSY', async () => {
    const d = recoveryDisk('busy');
    const nbd = await startNbd(dir, d.q, { shared: 4 });
    const sock = /socket=(.*)$/.exec(nbd.uri)![1]!;
    // The same export spelt another way (its socket's path through a `..`) is still one export to lock.
    const other = `nbd+unix:///disk?socket=${dir}/../${basename(dir)}/${basename(sock)}`;
    const s = await server({ rec: { path: nbd.uri, writable: true }, alias: { path: other, writable: true } });
    const src = await primary('busy-src');
    // Slowed to 4 MiB/s: the first is still running when the others ask.
    const first = push(src, client(s, 'rec', { bwlimit: 4 * MiB }));
    for (let i = 0; i < 200 && !existsSync(nbdJournalPath(join(s.dir, 'state'), nbd.uri)); i++) await new Promise((r) => setTimeout(r, 25));
    await expect(push(src, client(s))).rejects.toMatchObject({ code: 'ERR_BUSY' });
    await expect(push(src, client(s, 'alias'))).rejects.toMatchObject({ code: 'ERR_BUSY' });
    await expect(pull(join(dir, 'busy-back.raw'), client(s, 'alias'))).rejects.toMatchObject({ code: 'ERR_BUSY' });
    expect((await first).verified).toBe(true);
    await nbd.stop();
    expect(sameContent(d.q, src)).toBe(true);
  }, 120_000);

  test('a server shutting down mid-push puts the export back as it was and leaves no journal', async () => {
    const d = recoveryDisk('shutdown');
    const nbd = await startNbd(dir, d.q);
    const s = await startServer({ rec: { path: nbd.uri, writable: true } });
    const journal = nbdJournalPath(join(s.dir, 'state'), nbd.uri);
    const src = await primary('shutdown-src');
    // Slowed to 4 MiB/s: the shutdown comes while the delta is being written.
    const pushing = push(src, client(s, 'rec', { bwlimit: 4 * MiB }));
    pushing.catch(() => undefined);
    for (let i = 0; i < 400 && !existsSync(journal); i++) await new Promise((r) => setTimeout(r, 25));
    expect(existsSync(journal)).toBe(true);
    const report = await s.server.shutdown(0);
    expect(report.interrupted).toBe(1);
    await expect(pushing).rejects.toMatchObject({ code: 'ERR_BUSY' });
    expect(existsSync(journal)).toBe(false);
    await rm(s.dir, { recursive: true, force: true });
    await nbd.stop();
    expect(sameContent(d.q, d.raw)).toBe(true);
  }, 60_000);

  test('a --dirty-bitmap push into an NBD volume is refused (ERR_PARAM: its crash marker would need a file beside the volume) and the export is untouched', async () => {
    const d = recoveryDisk('dirty');
    const vol = await startNbd(dir, d.q);
    const p = join(dir, 'dirty-primary.qcow2');
    qemuImg('create', '-f', 'qcow2', p, `${SIZE}M`);
    qemuImg('bitmap', '--add', p, 'b0');
    qemuIo(p, 'write -P 0x99 1M 64k');
    const src = await startNbd(dir, p, { readOnly: true, bitmap: 'b0' });
    const s = await server({ rec: { path: vol.uri, writable: true } });
    await expect(push(src.uri, client(s, 'rec', { dirtyBitmap: 'b0', stateDir: join(dir, 'dirty-client-state') }))).rejects.toMatchObject({
      code: 'ERR_PARAM',
      message: expect.stringMatching(/NBD export: a --dirty-bitmap push into it is not supported; push without --dirty-bitmap/),
    });
    await vol.stop();
    expect(sameContent(d.q, d.raw)).toBe(true);
  }, 60_000);

  test('a push to several replicas, one of them an NBD volume, updates and verifies both', async () => {
    const d = recoveryDisk('fan');
    const nbd = await startNbd(dir, d.q);
    const fileVol = join(dir, 'fan-file.img');
    await writeFile(fileVol, randomBytes(SIZE * MiB));
    const a = await server({ vol: { path: fileVol, writable: true } });
    const b = await server({ vol: { path: nbd.uri, writable: true } });
    const src = await primary('fan-src');
    const r = await pushToReplicas(src, [
      { remote: 'file', opts: client(a, 'vol') },
      { remote: 'nbd', opts: client(b, 'vol') },
    ]);
    expect(r.replicas.map((o) => o.ok)).toEqual([true, true]);
    expect((await readFile(fileVol)).equals(await readFile(src))).toBe(true);
    await nbd.stop();
    expect(sameContent(d.q, src)).toBe(true);
  }, 120_000);
});

describe.skipIf(!hasQemu)('a server killed mid-push into an NBD volume', () => {
  /** `resync serve` (the built CLI) with the export as its writable volume; resolves once it listens. */
  async function cliServer(uri: string, state: string, secretFile: string, env: Record<string, string> = {}): Promise<{ child: ChildProcess; port: number; exited: Promise<NodeJS.Signals | null> }> {
    const child = spawn(process.execPath, [CLI, 'serve', '--listen', '127.0.0.1:0', '--secret-file', secretFile, '--state-dir', state, '--volume', `rec=${uri}:rw`], {
      stdio: ['ignore', 'ignore', 'pipe'],
      env: { ...process.env, ...env },
    });
    const exited = new Promise<NodeJS.Signals | null>((r) => child.on('exit', (_c, sig) => r(sig)));
    let log = '';
    const port = await new Promise<number>((res, rej) => {
      child.stderr!.on('data', (c: Buffer) => {
        log += c.toString();
        const m = /listening on 127\.0\.0\.1:(\d+)/.exec(log);
        if (m) res(Number(m[1]));
      });
      void exited.then(() => rej(new Error(`server exited: ${log}`)));
    });
    return { child, port, exited };
  }

  let secretFile: string;
  let secret: Buffer;
  beforeAll(async () => {
    secret = Buffer.from(randomBytes(24).toString('base64'));
    secretFile = join(dir, 'kill-secret');
    await writeFile(secretFile, secret, { mode: 0o600 });
  });

  /** A push from `src` that SIGKILLs the server at `at` (by default once its first batch reached the export); returns the export and the journal it left. */
  async function killedPush(name: string, src: string, state: string, at = 'nbd-batch-written'): Promise<{ d: { q: string; raw: string }; nbd: NbdExport; journal: string }> {
    expect(existsSync(CLI)).toBe(true);
    const d = recoveryDisk(name);
    const nbd = await startNbd(dir, d.q);
    const srv = await cliServer(nbd.uri, state, secretFile, { RESYNC_KILL_AT: at });
    await expect(push(src, { host: '127.0.0.1', port: srv.port, secret, volume: 'rec' })).rejects.toMatchObject({ code: 'ERR_CONNECTION' });
    expect(await srv.exited).toBe('SIGKILL');
    const journal = nbdJournalPath(state, nbd.uri);
    expect(existsSync(journal)).toBe(true);
    return { d, nbd, journal };
  }

  /** Run `fn` against a fresh `resync serve` of the export (its state directory `state`), then stop the server and the export (its content is then on disk). */
  async function servedThenStopped(nbd: NbdExport, state: string, fn: (port: number) => Promise<void>): Promise<void> {
    const srv = await cliServer(nbd.uri, state, secretFile);
    try {
      await fn(srv.port);
    } finally {
      srv.child.kill('SIGTERM');
      await srv.exited;
    }
    await nbd.stop();
  }

  test('the volume is refused to readers (ERR_JOURNAL); the next push rolls the export back first and completes', async () => {
    const state = join(dir, 'kill-state-1');
    const src = await primary('kill-src-1');
    const { d, nbd, journal } = await killedPush('kill1', src, state);
    // Part-written: neither the old disk nor the source (the journal is what makes it whole again).
    const img = await openNbdImage(nbd.uri, { write: true });
    const now = await img.nbd.read(0, img.size);
    await img.nbd.close();
    expect(now.equals(await readFile(d.raw))).toBe(false);
    expect(now.equals(await readFile(src))).toBe(false);
    await servedThenStopped(nbd, state, async (port) => {
      const opts = { host: '127.0.0.1', port, secret, volume: 'rec' };
      await expect(pull(join(dir, 'kill-back.raw'), opts)).rejects.toMatchObject({ code: 'ERR_JOURNAL', message: expect.stringMatching(/did not finish.*resync recover/) });
      await expect(verifyRemote(src, opts)).rejects.toMatchObject({ code: 'ERR_JOURNAL' });
      // The pushing client hears of the rollback (Ready), on stderr and in its JSON.
      const r = await runCli(CLI, ['push', '--json', '--secret-file', secretFile, src, `127.0.0.1:${port}/rec`], { timeoutMs: 60_000 });
      expect(r.code, r.stderr).toBe(0);
      const out = JSON.parse(r.stdout) as { rolledBack?: { bytes: number } };
      expect(out).toMatchObject({ ok: true, verified: true, recovered: 'rolled-back', rolledBack: { verified: true } });
      expect(out.rolledBack!.bytes).toBeGreaterThan(0);
      expect(r.stderr).toMatch(new RegExp(`resync push: note: 127\\.0\\.0\\.1:${port}/rec: the server rolled back an unfinished earlier push into this volume before this push \\(${out.rolledBack!.bytes} bytes put back, checked against the hash of the image from before it\\)`));
      expect(existsSync(journal)).toBe(false);
    });
    expect(sameContent(d.q, src)).toBe(true);
  }, 120_000);

  test('killed after the final flush, before the commit record: the next push rolls back and pushes again', async () => {
    const state = join(dir, 'kill-state-3');
    const src = await primary('kill-src-3');
    const { d, nbd, journal } = await killedPush('kill3', src, state, 'nbd-flushed');
    await servedThenStopped(nbd, state, async (port) => {
      const notes: string[] = [];
      const r = await push(src, { host: '127.0.0.1', port, secret, volume: 'rec', onNote: (m) => notes.push(m) });
      expect(r).toMatchObject({ verified: true, recovered: 'rolled-back', rolledBack: { verified: true } });
      expect(notes).toEqual([expect.stringMatching(/the server rolled back an unfinished earlier push/)]);
      // Nothing is left to settle: the push after it hears of no rollback.
      const again = await push(src, { host: '127.0.0.1', port, secret, volume: 'rec' });
      expect(again).not.toHaveProperty('recovered');
      expect(again).not.toHaveProperty('rolledBack');
    });
    expect(existsSync(journal)).toBe(false);
    expect(sameContent(d.q, src)).toBe(true);
  }, 120_000);

  test('killed after the commit record, before the journal is removed: the next push hears the earlier one had finished, and the export keeps it', async () => {
    const state = join(dir, 'kill-state-5');
    const src = await primary('kill-src-5');
    const { d, nbd, journal } = await killedPush('kill5', src, state, 'nbd-committed');
    // The push had finished: the export already holds the new image, journal or not.
    const img = await openNbdImage(nbd.uri);
    const now = await img.nbd.read(0, img.size);
    await img.nbd.close();
    expect(now.equals(await readFile(src))).toBe(true);
    await servedThenStopped(nbd, state, async (port) => {
      const notes: string[] = [];
      const r = await push(src, { host: '127.0.0.1', port, secret, volume: 'rec', onNote: (m) => notes.push(m) });
      expect(r).toMatchObject({ verified: true, recovered: 'completed' });
      expect(r).not.toHaveProperty('rolledBack');
      expect(notes).toEqual([expect.stringMatching(/the server found that an earlier push into this volume had finished before it was cut off, and removed its leftover journal/)]);
    });
    expect(existsSync(journal)).toBe(false);
    expect(sameContent(d.q, src)).toBe(true);
  }, 120_000);

  test('a client that does not list "ready-settled" (an older one) gets the four-field Ready it can read; the export is rolled back all the same', async () => {
    const state = join(dir, 'kill-state-4');
    const src = await primary('kill-src-4');
    const { d, nbd, journal } = await killedPush('kill4', src, state);
    let ready: ReadyMsg;
    await servedThenStopped(nbd, state, async (port) => {
      // The handshake an older client makes: its Hello lists the caps it knew of.
      const conn = await dial('127.0.0.1', port, { idleTimeoutMs: 30_000 });
      try {
        await conn.exchangePreamble();
        await conn.send({ type: MsgType.Hello, version: PROTOCOL_VERSION, caps: ['push', 'pull', 'verify', 'subsums-nh', 'dirty-image'] });
        const ch = await conn.expect(MsgType.Challenge, 'a challenge');
        const cn = newNonce();
        await conn.send({ type: MsgType.Auth, clientNonce: cn, mac: clientProof(secret, ch.nonce, cn) });
        await conn.expect(MsgType.AuthOk, 'authentication result');
        await conn.send({ type: MsgType.Open, mode: 'push', volume: 'rec', imageSize: SIZE * MiB, blockSize: 0, resumeId: '' });
        ready = await conn.expect(MsgType.Ready, 'ready');
      } finally {
        conn.destroy();
      }
      expect(ready).not.toHaveProperty('settled');
      // The session is gone: the server's push ends there, and the rollback it did first stays.
      for (let i = 0; i < 100 && existsSync(journal); i++) await new Promise((r) => setTimeout(r, 50));
      expect(existsSync(journal)).toBe(false);
    });
    expect(sameContent(d.q, d.raw)).toBe(true);
  }, 120_000);

  test('resync recover HOST:PORT/VOLUME rolls the export back to exactly what it was', async () => {
    const state = join(dir, 'kill-state-2');
    const src = await primary('kill-src-2');
    const { d, nbd, journal } = await killedPush('kill2', src, state);
    await servedThenStopped(nbd, state, async (port) => {
      const r = await runCli(CLI, ['recover', '--json', '--secret-file', secretFile, `127.0.0.1:${port}/rec`]);
      expect(r.code, r.stderr).toBe(0);
      expect(JSON.parse(r.stdout)).toMatchObject({ ok: true, outcome: 'rolled-back', imageSize: SIZE * MiB });
      expect(existsSync(journal)).toBe(false);
      expect((await recoverRemote({ host: '127.0.0.1', port, secret, volume: 'rec' })).outcome).toBe('nothing');
    });
    expect(sameContent(d.q, d.raw)).toBe(true);
  }, 120_000);
});

describe('NBD volume specs', () => {
  test('--volume NAME=URI[:rw|:ro] keeps the URI as it is and takes the mode off its end', () => {
    const v = parseVolumes(['a=nbd+unix:///vm1?socket=/run/vm1.sock:rw', 'b=nbd://dr:10809/vm1', 'c=nbd://[::1]:10809/vm1:ro', 'd=nbds+unix:///vm1?socket=/run/vm1.sock&tls-certificates=/etc/pki/nbd&tls-hostname=localhost:rw']);
    expect(v).toEqual({
      a: { path: 'nbd+unix:///vm1?socket=/run/vm1.sock', writable: true },
      b: { path: 'nbd://dr:10809/vm1', writable: false },
      c: { path: 'nbd://[::1]:10809/vm1', writable: false },
      d: { path: 'nbds+unix:///vm1?socket=/run/vm1.sock&tls-certificates=/etc/pki/nbd&tls-hostname=localhost', writable: true },
    });
    expect(() => parseVolumes(['a=nbd://dr:10809/vm1:wr'])).toThrow(ConfigError);
  });

  test('a malformed URI, a relative socket, an export that does not answer, or a read-only export served writable: a ConfigError naming each', async () => {
    const state = join(dir, 'spec-state');
    const vols = parseVolumes([
      'nosock=nbd+unix:///vm1:rw',
      'badport=nbd://127.0.0.1:99999/vm1',
      'rel=nbd+unix:///vm1?socket=rel.sock:rw',
      'gone=nbd+unix:///vm1?socket=/nonexistent/resync-test.sock',
    ]);
    const { problems } = await checkVolumes(vols, (n) => `--volume ${n}`, { stateDir: state });
    expect(problems.map((p) => p.where)).toEqual(['--volume nosock', '--volume badport', '--volume rel', '--volume gone']);
    expect(problems[0]!.message).toMatch(/not a usable NBD URI \(an nbd\+unix URI needs \?socket=PATH\)/);
    expect(problems[1]!.message).toMatch(/not a usable NBD URI/);
    expect(problems[2]!.message).toMatch(/socket path rel\.sock must be absolute/);
    expect(problems[3]!.message).toMatch(/cannot open the export .*qemu-nbd/);
    // Through the CLI: exit 2 with the problem on one line.
    const r = await runCli(CLI, ['serve', '--secret-file', join(dir, 'kill-secret'), '--state-dir', state, '--volume', 'nosock=nbd+unix:///vm1:rw']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--volume nosock: nbd\+unix:\/\/\/vm1: not a usable NBD URI/);
  }, 60_000);

  test.skipIf(!hasQemu)('a read-only export served as a writable volume, and "inPlace": false on an NBD volume, are refused; a good one passes with its state directory made', async () => {
    const d = recoveryDisk('spec');
    const ro = await startNbd(dir, d.q, { readOnly: true });
    const state = join(dir, 'spec-state-2');
    const { problems } = await checkVolumes({ w: { path: ro.uri, writable: true } }, undefined, { stateDir: state });
    expect(problems).toHaveLength(1);
    expect(problems[0]!.message).toMatch(/export is read-only, but the volume is writable/);
    expect((await checkVolumes({ r: { path: ro.uri, writable: false } }, undefined, { stateDir: state })).problems).toEqual([]);
    expect(existsSync(state)).toBe(true);
    await ro.stop();
    const secret = join(dir, 'spec-secret');
    await writeFile(secret, randomBytes(24).toString('base64'), { mode: 0o600 });
    const cfg = join(dir, 'spec.json');
    await writeFile(cfg, JSON.stringify({ secretFile: secret, stateDir: 'spec-state-3', volumes: { v: { path: 'nbd://127.0.0.1:1/x', writable: true, inPlace: false } } }));
    const e = await readServerConfig(cfg).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(ConfigError);
    expect((e as ConfigError).problems).toEqual([{ where: 'volumes.v.path', message: expect.stringMatching(/always patched in place/) }]);
  }, 60_000);

  test.skipIf(!hasQemu)('two volumes on one export under two spellings of its URI (their locks would differ) are refused; one spelling twice is a warning', async () => {
    const d = recoveryDisk('twin');
    const nbd = await startNbd(dir, d.q, { tcp: true });
    const other = nbd.uri.replace('//127.0.0.1:', '//localhost:');
    const state = join(dir, 'twin-state');
    const twins = await checkVolumes({ a: { path: nbd.uri, writable: true }, b: { path: other, writable: true } }, undefined, { stateDir: state });
    expect(twins.problems).toEqual([{ where: 'volumes.b.path', message: expect.stringMatching(/is the NBD export of volume a under another spelling/) }]);
    const same = await checkVolumes({ a: { path: nbd.uri, writable: true }, b: { path: nbd.uri, writable: false } }, undefined, { stateDir: state });
    expect(same.problems).toEqual([]);
    expect(same.warnings).toEqual([expect.stringMatching(/is also volume a; sessions under the two names take turns/)]);
    await nbd.stop();
  }, 60_000);

  test('serve --stdio never opens an NBD URI a client names', async () => {
    await expect(resolveRequested(`nbd+unix:///x?socket=${join(dir, 's.sock')}`, 'pull', { allow: [dir], readOnly: false })).rejects.toMatchObject({ code: 'ERR_PERMISSION', message: expect.stringMatching(/NBD export cannot be named by the client/) });
    await expect(resolveRequested('nbd://127.0.0.1:10809/x', 'push', { allow: null, readOnly: false })).rejects.toMatchObject({ code: 'ERR_PERMISSION' });
  });
});
