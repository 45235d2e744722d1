import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { execFile, execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { connect, type Socket } from 'node:net';
import { ResyncServer } from '../../src/net/server.js';
import { push } from '../../src/net/client.js';

let dir: string;
let server: ResyncServer;
let port: number;
let ca: Buffer;
const secret = Buffer.from(randomBytes(24).toString('base64'));
const CLI = fileURLToPath(new URL('../../bin/resync.js', import.meta.url));

function haveOpenssl(): boolean {
  try {
    execFileSync('openssl', ['version']);
    return true;
  } catch {
    return false;
  }
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'resync-tls-'));
  if (!haveOpenssl()) return;
  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '1',
    '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem'), '-subj', '/CN=resync-test', '-addext', 'subjectAltName=IP:127.0.0.1',
  ], { stdio: 'ignore' });
  ca = await readFile(join(dir, 'cert.pem'));
  server = new ResyncServer({
    host: '127.0.0.1',
    port: 0,
    secret,
    volumes: { v: { path: join(dir, 'vol.img'), writable: true } },
    maxSessions: 8,
    idleTimeoutMs: 10_000,
    handshakeTimeoutMs: 5_000,
    tls: { cert: ca, key: await readFile(join(dir, 'key.pem')) },
  });
  port = await server.listen();
});
afterAll(async () => {
  await server?.close();
  await rm(dir, { recursive: true, force: true });
});

describe.skipIf(!haveOpenssl())('TLS', () => {
  test('push over TLS with the server certificate pinned as CA', async () => {
    const src = randomBytes(1 << 20);
    await writeFile(join(dir, 'vol.img'), randomBytes(1 << 20));
    await writeFile(join(dir, 'src.img'), src);
    const r = await push(join(dir, 'src.img'), { host: '127.0.0.1', port, secret, volume: 'v', tls: { ca } });
    expect(r.verified).toBe(true);
    expect((await readFile(join(dir, 'vol.img'))).equals(src)).toBe(true);
  });

  test('an untrusted certificate is refused; a plain-TCP client gets nothing; the server stays healthy', async () => {
    await writeFile(join(dir, 'src.img'), randomBytes(1000));
    await expect(push(join(dir, 'src.img'), { host: '127.0.0.1', port, secret, volume: 'v', tls: {} })).rejects.toMatchObject({ code: 'ERR_CONNECTION' });
    await expect(push(join(dir, 'src.img'), { host: '127.0.0.1', port, secret, volume: 'v', idleTimeoutMs: 2000 })).rejects.toBeDefined();
    const r = await push(join(dir, 'src.img'), { host: '127.0.0.1', port, secret, volume: 'v', tls: { ca } });
    expect(r.verified).toBe(true);
  });

  test('the resync command trusts the CAs of NODE_EXTRA_CA_CERTS though node starts without them', async () => {
    await writeFile(join(dir, 'secret'), secret, { mode: 0o600 });
    await writeFile(join(dir, 'vol.img'), randomBytes(1 << 20));
    const src = randomBytes(1 << 20);
    await writeFile(join(dir, 'src.img'), src);
    // Executed, so its #! line runs: env moves the variable to RESYNC_EXTRA_CA_CERTS (bin/resync.js).
    const run = (env: NodeJS.ProcessEnv): Promise<{ code: number; stderr: string }> =>
      new Promise((resolve) => {
        execFile(CLI, ['push', '--tls', '--secret-file', join(dir, 'secret'), join(dir, 'src.img'), `127.0.0.1:${port}/v`], { env, timeout: 60_000 }, (err, _out, stderr) =>
          resolve({ code: err ? ((err as { code?: number }).code ?? -1) : 0, stderr }),
        );
      });
    const base = { ...process.env };
    delete base.NODE_EXTRA_CA_CERTS;
    delete base.RESYNC_EXTRA_CA_CERTS;
    const without = await run(base);
    expect(without.code).not.toBe(0);
    expect(without.stderr).toMatch(/SELF_SIGNED|certificate/i);
    const withCa = await run({ ...base, NODE_EXTRA_CA_CERTS: join(dir, 'cert.pem') });
    expect(withCa.stderr).toBe('');
    expect(withCa.code).toBe(0);
    expect((await readFile(join(dir, 'vol.img'))).equals(src)).toBe(true);
  });

  test('serve refuses a key that is not the certificate\'s, or the two swapped: exit 2 naming the files, before listening', async () => {
    execFileSync('openssl', ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', join(dir, 'other.pem')], { stdio: 'ignore' });
    await writeFile(join(dir, 'secret'), secret, { mode: 0o600 });
    const serve = (cert: string, key: string): Promise<{ code: number; stderr: string }> =>
      new Promise((resolve) => {
        const args = ['serve', '--listen', '127.0.0.1:0', '--secret-file', join(dir, 'secret'), '--volume', `v=${join(dir, 'vol.img')}`, '--tls-cert', join(dir, cert), '--tls-key', join(dir, key)];
        execFile(process.execPath, [CLI, ...args], { timeout: 20_000 }, (err, _out, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? -1) : 0, stderr }));
      });
    const mismatch = await serve('cert.pem', 'other.pem');
    expect(mismatch.code).toBe(2);
    expect(mismatch.stderr).toContain(`ERR_PARAM: ${join(dir, 'other.pem')} is not the private key of the certificate ${join(dir, 'cert.pem')}`);
    expect(mismatch.stderr).not.toMatch(/listening|at .*\.js:/);
    const swapped = await serve('key.pem', 'cert.pem');
    expect(swapped.code).toBe(2);
    expect(swapped.stderr).toContain(`ERR_PARAM: ${join(dir, 'key.pem')} is not a PEM certificate`);
  });

  test('TLS on one side only, or a CA not given: the hint says which', async () => {
    await writeFile(join(dir, 'secret'), secret, { mode: 0o600 });
    await writeFile(join(dir, 'vol.img'), randomBytes(1 << 16));
    await writeFile(join(dir, 'src.img'), randomBytes(1 << 16));
    const plain = new ResyncServer({ host: '127.0.0.1', port: 0, secret, volumes: { v: { path: join(dir, 'vol.img'), writable: false } }, maxSessions: 8, idleTimeoutMs: 10_000, handshakeTimeoutMs: 5_000 });
    const plainPort = await plain.listen();
    const verify = (p: number, ...flags: string[]): Promise<{ code: number; stderr: string }> =>
      new Promise((resolve) => {
        const args = ['verify', ...flags, '--secret-file', join(dir, 'secret'), join(dir, 'src.img'), `127.0.0.1:${p}/v`];
        const env = { ...process.env };
        delete env.NODE_EXTRA_CA_CERTS;
        execFile(process.execPath, [CLI, ...args], { env, timeout: 30_000 }, (err, _out, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? -1) : 0, stderr }));
      });
    try {
      const noTls = await verify(port);
      expect(noTls.code).toBe(7);
      expect(noTls.stderr).toContain('if it serves TLS (--tls-cert), add --tls');
      const tlsToPlain = await verify(plainPort, '--tls');
      expect(tlsToPlain.code).toBe(7);
      expect(tlsToPlain.stderr).toContain(`the server at 127.0.0.1:${plainPort} does not speak TLS`);
      const noCa = await verify(port, '--tls');
      expect(noCa.code).toBe(7);
      expect(noCa.stderr).toContain('with --tls-ca FILE');
    } finally {
      await plain.close();
    }
  });

  test('connections that never start their TLS handshake are held to the unauthenticated limits and the deadline', { timeout: 20_000 }, async () => {
    const limited = new ResyncServer({
      host: '127.0.0.1',
      port: 0,
      secret,
      volumes: { v: { path: join(dir, 'vol.img'), writable: true } },
      maxSessions: 8,
      maxPreAuth: 6,
      maxPreAuthPerAddress: 3,
      idleTimeoutMs: 10_000,
      handshakeTimeoutMs: 1_500,
      tls: { cert: ca, key: await readFile(join(dir, 'key.pem')) },
    });
    const lport = await limited.listen();
    const socks: Socket[] = [];
    try {
      // Ten plain TCP connections that never send a ClientHello.
      const open = new Set<number>();
      const closedAt: number[] = [];
      const t0 = Date.now();
      await Promise.all(
        Array.from({ length: 10 }, (_, i) =>
          new Promise<Socket>((resolve) => {
            const c = connect(lport, '127.0.0.1', () => resolve(c));
            socks.push(c);
            c.on('error', () => undefined);
            open.add(i);
            c.on('close', () => {
              open.delete(i);
              closedAt.push(Date.now() - t0);
            });
          }),
        ),
      );
      await new Promise((r) => setTimeout(r, 500));
      // Past the per-address limit, closed at once.
      expect(open.size).toBe(3);
      // The rest go at the deadline, not at TLS's own default of 120 s.
      await new Promise((r) => setTimeout(r, 2_000));
      expect(open.size).toBe(0);
      expect(Math.max(...closedAt)).toBeLessThan(3_000);
      // And the server still serves.
      await writeFile(join(dir, 'src.img'), randomBytes(1000));
      const r = await push(join(dir, 'src.img'), { host: '127.0.0.1', port: lport, secret, volume: 'v', tls: { ca } });
      expect(r.verified).toBe(true);
    } finally {
      for (const c of socks) c.destroy();
      await limited.close();
    }
  });
});
