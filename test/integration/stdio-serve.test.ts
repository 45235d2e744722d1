/**
 * The preauthenticated stdio session must stay on its own transport: a TCP
 * client (with a shared secret) refuses a server that announces "preauth",
 * so a network peer cannot skip the secret by offering it.
 */
import { createServer, type Server } from 'node:net';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { ResyncServer } from '../../src/net/server.js';
import { connectAuthenticated } from '../../src/net/client.js';

let dir: string;
let tcp: Server;
let port: number;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'resync-stdio-'));
  await writeFile(join(dir, 'vm.img'), Buffer.alloc(8192, 1));
  // A stdio-mode server, reached over TCP as a hostile relay would offer it.
  tcp = createServer({ allowHalfOpen: true }, (s) => {
    const srv = new ResyncServer({ host: '', port: 0, secret: Buffer.alloc(0), volumes: {}, maxSessions: 1, idleTimeoutMs: 10_000, handshakeTimeoutMs: 10_000 });
    srv.serveStream(s, 'tcp', { allow: [dir], readOnly: false }).catch(() => undefined);
  });
  port = await new Promise<number>((r) => tcp.listen(0, '127.0.0.1', () => r((tcp.address() as { port: number }).port)));
});

afterAll(async () => {
  tcp.close();
  await rm(dir, { recursive: true, force: true });
});

test('a TCP client refuses a preauthenticated server with ERR_AUTH before opening anything', async () => {
  const err = await connectAuthenticated({ host: '127.0.0.1', port, volume: join(dir, 'vm.img'), secret: Buffer.alloc(32, 7) }).then(
    () => null,
    (e: unknown) => e,
  );
  expect(err).toMatchObject({ code: 'ERR_AUTH' });
  expect((err as Error).message).toMatch(/without the shared secret/);
});

test('over pipes (not a socket) the idle timeout still ends a silent session with ERR_TIMEOUT', async () => {
  const { PassThrough } = await import('node:stream');
  const { PipeDuplex } = await import('../../src/net/pipes.js');
  const { Connection } = await import('../../src/net/connection.js');
  const input = new PassThrough();
  const output = new PassThrough();
  output.resume();
  let destroyed = false;
  const conn = new Connection(new PipeDuplex(input, output, () => (destroyed = true)), 'client', { idleTimeoutMs: 300 });
  const t0 = performance.now();
  const err = await conn.exchangePreamble().then(
    () => null,
    (e: unknown) => e,
  );
  expect(err).toMatchObject({ code: 'ERR_TIMEOUT' });
  expect(performance.now() - t0).toBeGreaterThanOrEqual(250);
  expect(destroyed).toBe(true);
});

test('an output pipe closed under it (an ssh child that exited) ends the stream with EPIPE instead of leaving writes waiting', async () => {
  const { PassThrough } = await import('node:stream');
  const { PipeDuplex } = await import('../../src/net/pipes.js');
  const input = new PassThrough();
  const output = new PassThrough({ highWaterMark: 16 });
  const d = new PipeDuplex(input, output);
  d.on('error', () => undefined);
  // Nobody reads the output: the first write fills it and waits for 'drain'.
  d.write(Buffer.alloc(1024));
  const closed = new Promise((r) => d.once('close', r));
  // What Node does to a child's stdin when the child exits: destroyed, no error.
  output.destroy();
  await closed;
  expect(d.errored).toMatchObject({ code: 'EPIPE' });
});
