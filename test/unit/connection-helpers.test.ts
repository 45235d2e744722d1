/**
 * Connection helpers: the "keepalive=MS" capability (what a side asks for, a
 * third of its idle timeout within bounds, and what it takes from a peer's
 * caps, bounded, a malformed one asking for nothing), and HOST:PORT as
 * messages write it.
 */
import { describe, expect, test } from 'vitest';
import { createServer, connect, type Socket } from 'node:net';
import { Connection, hostPort, keepaliveCap, keepaliveWanted } from '../../src/net/connection.js';
import { noticeLine } from '../../src/net/client.js';
import { MAX_KEEPALIVE_MS, MIN_KEEPALIVE_MS, MsgType } from '../../protocol/constants.js';

describe('keepalive capability', () => {
  test('a side asks for a third of its idle timeout, within 200 ms .. 60 s', () => {
    expect(keepaliveCap(300_000)).toBe(`keepalive=${MAX_KEEPALIVE_MS}`);
    expect(keepaliveCap(30_000)).toBe('keepalive=10000');
    expect(keepaliveCap(1_000)).toBe('keepalive=333');
    expect(keepaliveCap(100)).toBe(`keepalive=${MIN_KEEPALIVE_MS}`);
  });

  test('what a peer asks for is taken within the same bounds; no cap or a malformed one asks for nothing', () => {
    expect(keepaliveWanted(['push', 'keepalive=333'])).toBe(333);
    expect(keepaliveWanted(['keepalive=1'])).toBe(MIN_KEEPALIVE_MS);
    expect(keepaliveWanted(['keepalive=999999999'])).toBe(MAX_KEEPALIVE_MS);
    expect(keepaliveWanted(['push', 'pull'])).toBeNull();
    for (const bad of ['keepalive=', 'keepalive=-5', 'keepalive=1e3', 'keepalive=0x10', 'keepalive=1234567890']) expect(keepaliveWanted([bad]), bad).toBeNull();
    // Round trip: what one side asks, the other takes.
    expect(keepaliveWanted([keepaliveCap(45_000)])).toBe(15_000);
  });
});

describe('HOST:PORT in messages', () => {
  test('an IPv6 address goes in brackets, as on the command line; names and IPv4 addresses as they are', () => {
    expect(hostPort('::1', 7873)).toBe('[::1]:7873');
    expect(hostPort('fe80::1%eth0', 1)).toBe('[fe80::1%eth0]:1');
    expect(hostPort('[::1]', 7873)).toBe('[::1]:7873');
    expect(hostPort('127.0.0.1', 7873)).toBe('127.0.0.1:7873');
    expect(hostPort('dr.example.net', 7873)).toBe('dr.example.net:7873');
  });
});

/** A client and a server Connection over a real TCP pair on 127.0.0.1, preambles exchanged. */
async function pair(): Promise<{ client: Connection; server: Connection; close: () => void }> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as { port: number }).port;
  const accepted = new Promise<Socket>((r) => srv.once('connection', r));
  const cs = connect(port, '127.0.0.1');
  const ss = await accepted;
  const client = new Connection(cs, 'client', { idleTimeoutMs: 5000 });
  const server = new Connection(ss, 'server', { idleTimeoutMs: 5000 });
  await Promise.all([client.exchangePreamble(), server.exchangePreamble()]);
  return { client, server, close: () => (cs.destroy(), ss.destroy(), srv.close()) };
}

describe('Notice', () => {
  test('a server\'s Notice reaches the client\'s listener outside the session\'s order; one from a client is a protocol error', async () => {
    const { client, server, close } = await pair();
    try {
      const heard: string[] = [];
      client.onNotice = (t) => heard.push(t);
      await client.send({ type: MsgType.Hello, version: 1, caps: [] });
      expect((await server.recv()).type).toBe(MsgType.Hello);
      await server.sendNotice('volume v keeps its last 4096 bytes');
      await server.send({ type: MsgType.Challenge, version: 1, nonce: new Uint8Array(32), caps: [] });
      // Taken out before the session's order is checked: the first message read is what followed it.
      expect((await client.recv()).type).toBe(MsgType.Challenge);
      expect(heard).toEqual(['volume v keeps its last 4096 bytes']);
    } finally {
      close();
    }
    const p2 = await pair();
    try {
      await p2.client.sendNotice('from the wrong side');
      await expect(p2.server.recv()).rejects.toMatchObject({ code: 'ERR_PROTOCOL', message: expect.stringContaining('a Notice from a client') });
    } finally {
      p2.close();
    }
  });

  test('its control characters are replaced before the operator sees it', () => {
    expect(noticeLine('tail kept\u001b[2J\u001b[31m red\r\nfake: ok\u0007')).toBe('the server says: tail kept?[2J?[31m red??fake: ok?');
    expect(noticeLine('plain words, 4096 bytes')).toBe('the server says: plain words, 4096 bytes');
  });
});
