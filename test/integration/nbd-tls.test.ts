/**
 * NBD over TLS (nbds://, nbds+unix://) against qemu-nbd with x509
 * credentials that openssl makes here: a push reads an export over TLS and a
 * pull writes one, both checked with qemu-img compare; an untrusted
 * certificate, a name it does not carry, a server without TLS, and a plain
 * nbd:// URI to a server that requires TLS are refused with ERR_NBD_TLS and
 * nothing written; client certificates where the server asks for them.
 * The CLI tests run the built CLI (dist/).
 */
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import { openNbdImage } from '../../src/io/nbd/image.js';
import { push } from '../../src/api/net.js';
import { checkVolumes } from '../../src/net/config.js';
import { closeServers, startServer, type TestServer } from '../helpers/server.js';
import { runCli } from '../helpers/cli.js';
import { hasQemu, qcow2Disk, sameContent, startNbd, stopAllNbd, tlsCerts, type TlsCerts } from '../helpers/qemu.js';

const CLI = join(fileURLToPath(new URL('../..', import.meta.url)), 'bin/resync.js');
const MiB = 1 << 20;
const SIZE = 16;
const hasOpenssl = existsSync('/usr/bin/openssl') || existsSync('/bin/openssl');

let dir: string;
let certs: TlsCerts;
let srv: TestServer;
/** The resync server's volume: a raw image of SIZE MiB, the source of pulls. */
let volume: string;

beforeAll(async () => {
  if (!hasQemu || !hasOpenssl) return;
  dir = await mkdtemp(join(tmpdir(), 'resync-nbdtls-'));
  certs = await tlsCerts(dir);
  volume = join(dir, 'volume.raw');
  const b = randomBytes(SIZE * MiB);
  b.fill(0, 4 * MiB, 9 * MiB);
  await writeFile(volume, b);
  srv = await startServer({ rec: { path: volume, writable: true } });
});
afterEach(stopAllNbd);
afterAll(async () => {
  await stopAllNbd();
  if (srv) await closeServers([srv]);
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** A qcow2 disk of SIZE MiB with data of its own, and a raw copy of it. */
function disk(name: string): { q: string; raw: string } {
  return qcow2Disk(dir, name, SIZE, 'write -P 0x5a 0 2M', `write -P 0xc3 ${SIZE - 3}M 1M`);
}

/** `uri` with the query parameters `q` added. */
function withParams(uri: string, q: Record<string, string>): string {
  const extra = new URLSearchParams(q).toString();
  return `${uri}${uri.includes('?') ? '&' : '?'}${extra}`;
}

/** `resync ARGS --json` with the server's secret; the exit code and the parsed JSON object. */
async function resync(...args: string[]): Promise<{ code: number; out: Record<string, unknown>; stderr: string }> {
  const r = await runCli(CLI, [...args, '--json', '--secret-file', srv.secretFile], { timeoutMs: 60_000 });
  return { code: r.code, out: JSON.parse(r.stdout || '{}') as Record<string, unknown>, stderr: r.stderr };
}

const remote = (): string => `127.0.0.1:${srv.port}/rec`;

describe.skipIf(!hasQemu || !hasOpenssl)('NBD over TLS with qemu-nbd', () => {
  test('push reads a qcow2 export over nbds://127.0.0.1:PORT/x: the volume then equals the export (qemu-img compare)', async () => {
    const d = disk('read-src');
    const nbd = await startNbd(dir, d.q, { tcp: true, name: 'x', tls: { dir: certs.server } });
    expect(nbd.uri).toMatch(/^nbds:\/\/127\.0\.0\.1:\d+\/x$/);
    const r = await resync('push', '--state-dir', join(dir, 'state-read'), withParams(nbd.uri, { 'tls-certificates': certs.ca }), remote());
    expect(r.code, r.stderr).toBe(0);
    expect(r.out).toMatchObject({ ok: true, verified: true, imageSize: SIZE * MiB });
    await nbd.stop();
    expect(sameContent(d.q, volume)).toBe(true);
    // The volume is the source of the next tests again.
    await writeFile(volume, randomBytes(SIZE * MiB));
  }, 120_000);

  test('pull writes a qcow2 export over nbds+unix (tls-hostname=localhost): the export then equals the volume', async () => {
    const d = disk('write-dst');
    const nbd = await startNbd(dir, d.q, { tls: { dir: certs.server } });
    const uri = withParams(nbd.uri, { 'tls-certificates': certs.ca, 'tls-hostname': 'localhost' });
    const r = await resync('pull', '--state-dir', join(dir, 'state-write'), remote(), uri);
    expect(r.code, r.stderr).toBe(0);
    expect(r.out).toMatchObject({ ok: true, verified: true });
    await nbd.stop();
    expect(sameContent(d.q, volume)).toBe(true);
  }, 120_000);

  test('a certificate another CA signed is refused (ERR_NBD_TLS, exit 8) and nothing is written', async () => {
    const d = disk('wrong-ca');
    const nbd = await startNbd(dir, d.q, { tcp: true, tls: { dir: certs.server } });
    const state = join(dir, 'state-wrong-ca');
    const r = await resync('pull', '--state-dir', state, remote(), withParams(nbd.uri, { 'tls-certificates': certs.otherCa }));
    expect(r.code).toBe(8);
    expect(r.out).toMatchObject({ ok: false, code: 'ERR_NBD_TLS' });
    expect(r.out.message).toMatch(new RegExp(`certificate that is not trusted \\(\\w+\\): the CA in ${certs.otherCa}/ca-cert\\.pem did not sign it`));
    expect(r.stderr).toMatch(/error ERR_NBD_TLS/);
    // Without tls-certificates, Node's own CAs do not know the test's either.
    const bare = await resync('pull', '--state-dir', state, remote(), nbd.uri);
    expect(bare).toMatchObject({ code: 8, out: { code: 'ERR_NBD_TLS', message: expect.stringMatching(/no CA Node trusts signed it: give the server's CA with tls-certificates=DIR/) } });
    await nbd.stop();
    expect(sameContent(d.q, d.raw)).toBe(true);
    // Refused before anything was journaled.
    expect((await readdir(state).catch(() => [])).filter((f) => f.endsWith('.resync-journal'))).toEqual([]);
  }, 120_000);

  test('nbds:// to a qemu-nbd without TLS is refused, not carried on in plaintext, and nothing is written', async () => {
    const d = disk('plain');
    const nbd = await startNbd(dir, d.q, { tcp: true });
    const tlsUri = withParams(nbd.uri.replace(/^nbd:/, 'nbds:'), { 'tls-certificates': certs.ca });
    const r = await resync('pull', '--state-dir', join(dir, 'state-plain'), remote(), tlsUri);
    expect(r.code).toBe(8);
    expect(r.out).toMatchObject({ ok: false, code: 'ERR_NBD_TLS', message: expect.stringMatching(/does not do TLS \(NBD_OPT_STARTTLS: .*\); refusing to go on in plaintext/) });
    await expect(openNbdImage(tlsUri)).rejects.toMatchObject({ code: 'ERR_NBD_TLS', reason: 'not-offered' });
    await nbd.stop();
    expect(sameContent(d.q, d.raw)).toBe(true);
  }, 120_000);

  test('plain nbd:// to a qemu-nbd that requires TLS: ERR_NBD_TLS naming the nbds:// URI to use', async () => {
    const d = disk('required');
    const nbd = await startNbd(dir, d.q, { tcp: true, tls: { dir: certs.server } });
    const plain = nbd.uri.replace(/^nbds:/, 'nbd:');
    await expect(openNbdImage(plain)).rejects.toMatchObject({ code: 'ERR_NBD_TLS', reason: 'required', message: expect.stringContaining(`requires TLS: use ${nbd.uri}`) });
  }, 60_000);

  test('the name is checked: one the certificate does not carry is refused; tls-verify-hostname=no takes any the CA signed', async () => {
    const d = disk('names');
    const nbd = await startNbd(dir, d.q, { tls: { dir: certs.server }, shared: 4 });
    await expect(openNbdImage(withParams(nbd.uri, { 'tls-certificates': certs.ca, 'tls-hostname': 'dr.example' }))).rejects.toMatchObject({
      code: 'ERR_NBD_TLS',
      reason: 'hostname',
      message: expect.stringMatching(/certificate for another name .*dr\.example.*name one it carries with tls-hostname=NAME/),
    });
    const img = await openNbdImage(withParams(nbd.uri, { 'tls-certificates': certs.ca, 'tls-verify-hostname': 'no' }));
    try {
      expect(img.size).toBe(SIZE * MiB);
      expect((await img.nbd.read(0, 4096)).equals(Buffer.alloc(4096, 0x5a))).toBe(true);
    } finally {
      await img.nbd.close();
    }
    // Without either, a socket has no name to check against: refused before connecting.
    await expect(openNbdImage(withParams(nbd.uri, { 'tls-certificates': certs.ca }))).rejects.toMatchObject({ code: 'ERR_PARAM', message: expect.stringMatching(/needs tls-hostname=NAME/) });
  }, 60_000);

  test('a server that verifies clients: the client certificate of tls-certificates gets in; without one, ERR_NBD_TLS saying so', async () => {
    const d = disk('client-auth');
    const nbd = await startNbd(dir, d.q, { tcp: true, tls: { dir: certs.server, verifyPeer: true }, shared: 4 });
    const img = await openNbdImage(withParams(nbd.uri, { 'tls-certificates': certs.client }), { write: true });
    try {
      await img.nbd.write(0, Buffer.alloc(65536, 0x11));
      await img.nbd.flush();
      expect((await img.nbd.read(0, 65536)).equals(Buffer.alloc(65536, 0x11))).toBe(true);
    } finally {
      await img.nbd.close();
    }
    await expect(openNbdImage(withParams(nbd.uri, { 'tls-certificates': certs.ca }))).rejects.toMatchObject({
      code: 'ERR_NBD_TLS',
      reason: 'handshake',
      message: expect.stringMatching(/may require a client certificate \(client-cert\.pem and client-key\.pem/),
    });
  }, 60_000);

  test('a tls-certificates directory without ca-cert.pem, or with a client certificate but no key: ERR_NBD_TLS before connecting', async () => {
    const empty = join(dir, 'tls-empty');
    const half = join(dir, 'tls-half');
    await import('node:fs/promises').then(async (fs) => {
      await fs.mkdir(empty, { recursive: true });
      await fs.mkdir(half, { recursive: true });
      await fs.copyFile(join(certs.client, 'ca-cert.pem'), join(half, 'ca-cert.pem'));
      await fs.copyFile(join(certs.client, 'client-cert.pem'), join(half, 'client-cert.pem'));
    });
    // Port 9 on loopback: nothing is connected to (the files are read first).
    await expect(openNbdImage(`nbds://127.0.0.1:9/x?tls-certificates=${empty}`)).rejects.toMatchObject({ code: 'ERR_NBD_TLS', reason: 'certificates', message: expect.stringMatching(/cannot read .*tls-empty\/ca-cert\.pem \(ENOENT\)/) });
    await expect(openNbdImage(`nbds://127.0.0.1:9/x?tls-certificates=${half}`)).rejects.toMatchObject({ code: 'ERR_NBD_TLS', reason: 'certificates', message: expect.stringMatching(/client-cert\.pem is there but .*client-key\.pem is not/) });
  });

  test('a served volume over nbds+unix: a push patches the export over TLS; a relative tls-certificates is refused at start; an untrusted one reaches the client without server paths', async () => {
    const d = disk('served');
    const nbd = await startNbd(dir, d.q, { tls: { dir: certs.server }, shared: 4 });
    const uri = withParams(nbd.uri, { 'tls-certificates': certs.ca, 'tls-hostname': 'localhost' });
    const state = join(dir, 'state-served');
    const { problems } = await checkVolumes({ good: { path: uri, writable: true }, rel: { path: withParams(nbd.uri, { 'tls-certificates': 'tls-ca', 'tls-hostname': 'localhost' }), writable: true } }, (n) => n, { stateDir: state });
    expect(problems).toEqual([{ where: 'rel', message: expect.stringMatching(/the certificate directory tls-ca must be absolute \(tls-certificates=\/DIR\)/) }]);
    const untrusted = withParams(nbd.uri, { 'tls-certificates': certs.otherCa, 'tls-hostname': 'localhost' });
    const s = await startServer({ tlsvol: { path: uri, writable: true }, bad: { path: untrusted, writable: true } }, { stateDir: state });
    try {
      const r = await push(volume, { host: '127.0.0.1', port: s.port, secret: s.secret, volume: 'tlsvol' });
      expect(r.verified).toBe(true);
      // A volume whose export's certificate the server does not trust: the client hears the code, not the server's paths.
      const e = await push(volume, { host: '127.0.0.1', port: s.port, secret: s.secret, volume: 'bad' }).then(() => null, (x: unknown) => x as Error & { code: string });
      expect(e).toMatchObject({ code: 'ERR_NBD_TLS', message: expect.stringMatching(/could not set up TLS with the volume's NBD export \(see the server log\)/) });
      expect(e!.message).not.toContain(dir);
      expect(s.events.some((ev) => ev.code === 'ERR_NBD_TLS' && ev.msg.includes(certs.otherCa))).toBe(true);
    } finally {
      await closeServers([s]);
    }
    await nbd.stop();
    expect(sameContent(d.q, volume)).toBe(true);
  }, 120_000);

  test('node:tls is loaded for an nbds:// export only, not for a plain one', async () => {
    const spy = join(dir, 'spy.cjs');
    await writeFile(spy, "process.on('exit', () => process.stderr.write('loaded ' + process.moduleLoadList.filter((m) => m.startsWith('NativeModule ')).map((m) => m.slice(13)).join(' ') + '\\n'));\n");
    const loaded = async (uri: string): Promise<string[]> => {
      const { execFile } = await import('node:child_process');
      return new Promise((resolve, reject) => {
        execFile(process.execPath, ['-r', spy, CLI, 'signature', '--state-dir', join(dir, 'state-spy'), uri, join(dir, 'spy.sig'), '-f'], { timeout: 60_000 }, (err, _out, stderr) => {
          if (err) return reject(new Error(stderr));
          resolve(/^loaded (.*)$/m.exec(stderr)?.[1]?.split(' ') ?? []);
        });
      });
    };
    const d = disk('spy');
    const plain = await startNbd(dir, d.q, { tcp: true });
    expect((await loaded(plain.uri)).filter((m) => /^(tls|_tls_wrap|_tls_common)$/.test(m))).toEqual([]);
    await plain.stop();
    const secure = await startNbd(dir, d.q, { tcp: true, tls: { dir: certs.server } });
    expect(await loaded(withParams(secure.uri, { 'tls-certificates': certs.ca }))).toContain('tls');
  }, 120_000);
});
