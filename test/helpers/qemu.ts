/**
 * qemu-utils for tests: make qcow2 images, write into them, export them with
 * qemu-nbd on a unix socket (or 127.0.0.1), compare guest-visible contents.
 * Every qemu-nbd started is remembered and stopped by stopAllNbd().
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll } from 'vitest';
import { startServer, type TestServer } from './server.js';

/** Whether qemu-img, qemu-io and qemu-nbd are installed (the tests that need them are skipped otherwise). */
export const hasQemu = ['qemu-img', 'qemu-io', 'qemu-nbd'].every((t) => spawnSync(t, ['--version'], { stdio: 'ignore' }).status === 0);

export function qemuImg(...args: string[]): string {
  return execFileSync('qemu-img', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** qemu-io commands (e.g. 'write -P 0xab 1M 64k') against a qcow2 image. */
export function qemuIo(image: string, ...cmds: string[]): void {
  execFileSync('qemu-io', ['-f', 'qcow2', ...cmds.flatMap((c) => ['-c', c]), image], { stdio: 'ignore' });
}

/** Whether two images have the same guest-visible content (qemu-img compare exit 0; 1 = differ). */
export function sameContent(a: string, b: string, fa = 'qcow2', fb = 'raw'): boolean {
  const r = spawnSync('qemu-img', ['compare', '-f', fa, '-F', fb, a, b], { encoding: 'utf8' });
  if (r.status !== 0 && r.status !== 1) throw new Error(`qemu-img compare: ${r.stderr}`);
  return r.status === 0;
}

/**
 * A qcow2 image `dir/NAME.qcow2` of `sizeMiB` MiB written with `writes`
 * (qemu-io commands), and `dir/NAME-before.raw`, a raw copy of its content.
 */
export function qcow2Disk(dir: string, name: string, sizeMiB: number, ...writes: string[]): { q: string; raw: string } {
  const q = join(dir, `${name}.qcow2`);
  qemuImg('create', '-f', 'qcow2', q, `${sizeMiB}M`);
  if (writes.length > 0) qemuIo(q, ...writes);
  const raw = join(dir, `${name}-before.raw`);
  qemuImg('convert', '-f', 'qcow2', '-O', 'raw', q, raw);
  return { q, raw };
}

const running = new Set<number>();

/** A running qemu-nbd. */
export interface NbdExport {
  uri: string;
  pid: number;
  stop(): Promise<void>;
}

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((res) => s.listen(0, '127.0.0.1', res));
  const port = (s.address() as { port: number }).port;
  await new Promise<void>((res) => s.close(() => res()));
  return port;
}

/**
 * Export `image` with qemu-nbd (persistent, so several connections may come
 * one after another) on a unix socket in `dir`, or on 127.0.0.1 with `tcp`.
 * Resolves once the export accepts connections (qemu-nbd --fork returns then).
 * `socket`: that socket path (the same URI from one export to the next, as a running VM's export keeps).
 * `shared`: most clients at once (qemu-nbd's default is 1: a second waits).
 * `tls`: TLS required, with the x509 directory `dir` (ca-cert.pem, server-cert.pem, server-key.pem;
 * tlsCerts() makes one), client certificates checked with `verifyPeer`; the URI is then nbds:// or
 * nbds+unix:// without its tls- parameters.
 */
export async function startNbd(
  dir: string,
  image: string,
  opts: { format?: string; readOnly?: boolean; bitmap?: string; tcp?: boolean; name?: string; socket?: string; shared?: number; tls?: { dir: string; verifyPeer?: boolean } } = {},
): Promise<NbdExport> {
  const name = opts.name ?? 'disk';
  const tag = `${process.pid}-${running.size}-${Date.now()}`;
  const pidFile = join(dir, `nbd-${tag}.pid`);
  const sock = opts.socket ?? join(dir, `nbd-${tag}.sock`);
  const port = opts.tcp ? await freePort() : 0;
  const args = ['--fork', '--persistent', '--pid-file', pidFile, '-f', opts.format ?? 'qcow2', '-x', name];
  args.push(...(opts.tcp ? ['-b', '127.0.0.1', '-p', String(port)] : ['-k', sock]));
  if (opts.readOnly) args.push('-r');
  if (opts.bitmap) args.push('-B', opts.bitmap);
  if (opts.shared !== undefined) args.push('--shared', String(opts.shared));
  if (opts.tls) args.push('--object', `tls-creds-x509,id=tls0,dir=${opts.tls.dir},endpoint=server,verify-peer=${opts.tls.verifyPeer ? 'yes' : 'no'}`, '--tls-creds', 'tls0');
  execFileSync('qemu-nbd', [...args, image], { stdio: 'ignore', timeout: 20_000 });
  const pid = Number((await readFile(pidFile, 'utf8')).trim());
  running.add(pid);
  const s = opts.tls ? 's' : '';
  const uri = opts.tcp ? `nbd${s}://127.0.0.1:${port}/${name}` : `nbd${s}+unix:///${name}?socket=${sock}`;
  return { uri, pid, stop: () => stopNbd(pid) };
}

/** x509 directories in qemu's layout, made by openssl for TLS tests. */
export interface TlsCerts {
  /** For qemu-nbd: ca-cert.pem, server-cert.pem and server-key.pem (for 127.0.0.1 and localhost). */
  server: string;
  /** For resync: ca-cert.pem only. */
  ca: string;
  /** For resync: ca-cert.pem, client-cert.pem and client-key.pem (a client certificate of the same CA). */
  client: string;
  /** For resync: the ca-cert.pem of another CA, which signed nothing here. */
  otherCa: string;
}

/** Make a CA, a server certificate (subjectAltName IP:127.0.0.1, DNS:localhost) and a client certificate under `dir`. */
export async function tlsCerts(dir: string): Promise<TlsCerts> {
  const { mkdir, copyFile, writeFile } = await import('node:fs/promises');
  const d = (n: string): string => join(dir, n);
  const dirs: TlsCerts = { server: d('tls-server'), ca: d('tls-ca'), client: d('tls-client'), otherCa: d('tls-other-ca') };
  for (const x of [...Object.values(dirs), d('tls-work')]) await mkdir(x, { recursive: true });
  const ssl = (...args: string[]): void => void execFileSync('openssl', args, { stdio: 'ignore', cwd: d('tls-work') });
  const ca = (name: string, out: string): void =>
    ssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', `${name}-key.pem`, '-out', out, '-days', '2', '-subj', `/CN=${name}`, '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign');
  ca('resync-test-ca', join(dirs.server, 'ca-cert.pem'));
  ca('another-ca', join(dirs.otherCa, 'ca-cert.pem'));
  const signed = async (cn: string, key: string, out: string, ext: string): Promise<void> => {
    await writeFile(d(`tls-work/${cn}.ext`), ext);
    ssl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', `${cn}.csr`, '-subj', `/CN=${cn}`);
    ssl('x509', '-req', '-in', `${cn}.csr`, '-CA', join(dirs.server, 'ca-cert.pem'), '-CAkey', 'resync-test-ca-key.pem', '-CAcreateserial', '-out', out, '-days', '2', '-extfile', `${cn}.ext`);
  };
  await signed('localhost', join(dirs.server, 'server-key.pem'), join(dirs.server, 'server-cert.pem'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n');
  await signed('resync-client', join(dirs.client, 'client-key.pem'), join(dirs.client, 'client-cert.pem'), 'extendedKeyUsage=clientAuth\n');
  for (const x of [dirs.ca, dirs.client]) await copyFile(join(dirs.server, 'ca-cert.pem'), join(x, 'ca-cert.pem'));
  return dirs;
}

/** Stop one qemu-nbd and wait until it is gone (it has closed and flushed its image then). */
export async function stopNbd(pid: number): Promise<void> {
  if (!running.delete(pid)) return;
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    return;
  }
  for (let i = 0; i < 200; i++) {
    try {
      process.kill(pid, 0);
    } catch {
      return;
    }
    await new Promise((r) => setTimeout(r, 25));
  }
  process.kill(pid, 'SIGKILL');
}

/** Stop every qemu-nbd these helpers started (afterEach/afterAll). */
export async function stopAllNbd(): Promise<void> {
  await Promise.all([...running].map((p) => stopNbd(p)));
}

/**
 * For a test file: a temp directory and a resync server whose writable
 * volume `rec` is `volumeFile` in it, made before the tests and removed
 * after them; every qemu-nbd is stopped after each test. Read the fields in
 * tests (they are set in beforeAll).
 */
export function nbdTestBed(prefix: string, volumeFile: string): { dir: string; srv: TestServer } {
  const bed = {} as { dir: string; srv: TestServer };
  beforeAll(async () => {
    bed.dir = await mkdtemp(join(tmpdir(), prefix));
    bed.srv = await startServer({ rec: { path: join(bed.dir, volumeFile), writable: true } });
  });
  afterEach(stopAllNbd);
  afterAll(async () => {
    await stopAllNbd();
    await bed.srv?.server.close();
    if (bed.dir) await rm(bed.dir, { recursive: true, force: true });
    if (bed.srv) await rm(bed.srv.dir, { recursive: true, force: true });
  });
  return bed;
}
