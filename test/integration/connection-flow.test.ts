import { afterEach, expect, test } from 'vitest';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { Connection, HIGH_WATER, QUEUE_BYTES } from '../../src/net/connection.js';
import { encodeFramedMessage } from '../../protocol/codec.js';
import { MsgType, PROTOCOL_VERSION, WIRE_MAGIC } from '../../protocol/constants.js';
import { encodePreamble } from '../../src/format/preamble.js';
import { MAX_LITERAL } from '../../src/core/limits.js';
import { adoptOwnReads, hasOwnReads, ownReadsConnect } from '../../src/net/own-reads.js';

let server: Server | null = null;
const sockets: Socket[] = [];
afterEach(async () => {
  for (const s of sockets.splice(0)) s.destroy();
  await new Promise<void>((r) => (server ? server.close(() => r()) : r()));
  server = null;
});

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
/** Out buffers (256 KiB) a sender on TCP may have: what its 1 MiB send buffer holds, a 1 MiB literal's worth more, and the one filling. */
const OUT_BUFFERS_BOUND = 4 + 5 + 1;

/**
 * A receiving Connection on a real socket whose peer writes `count` literals
 * of `MAX_LITERAL` bytes as fast as the socket takes them. The receiver's
 * session machine is told it is in the middle of a delta, so its checks let
 * the literals through.
 */
async function flood(count: number): Promise<{ conn: Connection; sent: number; frameLen: number }> {
  const frame = encodeFramedMessage({ type: MsgType.Literal, data: Buffer.alloc(MAX_LITERAL, 7) });
  let writer: Socket | null = null;
  server = createServer((s) => {
    sockets.push(s);
    writer = s;
  });
  await new Promise<void>((r) => server!.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  const sock = connect(port, '127.0.0.1');
  sockets.push(sock);
  await new Promise<void>((r) => sock.once('connect', r));
  const conn = new Connection(sock, 'server', { idleTimeoutMs: 10_000 });
  conn.session.step = () => 'delta-ops';
  while (!writer) await sleep(5);
  const w = writer as Socket;
  w.write(encodePreamble(WIRE_MAGIC, PROTOCOL_VERSION));
  for (let k = 0; k < count; k++) w.write(frame);
  return { conn, sent: encodePreamble(WIRE_MAGIC, PROTOCOL_VERSION).length + count * frame.length, frameLen: frame.length };
}

test('a receiver that takes no message stops reading after QUEUE_BYTES of payload, not after 64 messages', async () => {
  const { conn, sent } = await flood(48);
  // Time for the peer's 48 MiB to arrive, were they read.
  let last = -1;
  while (conn.bytesIn !== last) {
    last = conn.bytesIn;
    await sleep(100);
  }
  // The queue bound, one frame read past it, and what the socket reads ahead of a pause.
  expect(conn.bytesIn).toBeLessThanOrEqual(QUEUE_BYTES + MAX_LITERAL + 256 * 1024);
  expect(conn.bytesIn).toBeLessThan(sent);
});

/** Copies of a dozen bytes each, `count` of them written at once by `send` (the peer's socket). */
function tinyOps(count: number): Buffer {
  return Buffer.concat(Array.from({ length: count }, (_, k) => encodeFramedMessage({ type: MsgType.Copy, offset: k * 7, length: k + 1 })));
}

test('thousands of small frames in one read are decoded only as far as the queue has room, and all arrive in order', async () => {
  for (const own of [false, true]) {
    const { sender, receiver } = own ? await ownReadsPair() : await tcpPair();
    receiver.session.step = () => 'delta-ops';
    const count = 20_000;
    const bytes = tinyOps(count);
    const base = receiver.bytesIn; // the preamble
    sender.socket.write(bytes);
    // None taken: the first read's frames past the queue's room stay bytes, and reading stops there.
    let last = -1;
    while (receiver.bytesIn !== last) {
      last = receiver.bytesIn;
      await sleep(50);
    }
    expect(receiver.bytesIn).toBeGreaterThan(0);
    expect(receiver.bytesIn - base).toBeLessThan(bytes.length);
    expect(receiver.queued).toBe(HIGH_WATER);
    let most = 0;
    for (let k = 0; k < count; k++) {
      // Taken in order and whole, including those held while later reads refilled the socket's buffer.
      expect(await receiver.recv()).toEqual({ type: MsgType.Copy, offset: k * 7, length: k + 1 });
      most = Math.max(most, receiver.queued);
    }
    expect(receiver.bytesIn - base).toBe(bytes.length);
    expect(most).toBeLessThanOrEqual(HIGH_WATER);
    sender.destroy();
    receiver.destroy();
    server?.close();
  }
});

test('frames held back are still received after the peer ends its side', async () => {
  const { sender, receiver } = await ownReadsPair();
  receiver.session.step = () => 'delta-ops';
  sender.socket.end(tinyOps(3000));
  for (let t = 0; t < 100 && receiver.bytesIn < 3000; t++) await sleep(20);
  await sleep(100);
  for (let k = 0; k < 3000; k++) expect(await receiver.recv()).toEqual({ type: MsgType.Copy, offset: k * 7, length: k + 1 });
  await expect(receiver.recv()).rejects.toThrow(/closed the connection$/);
});

test('reading resumes as messages are taken, and every message arrives whole', async () => {
  const count = 24;
  const { conn, sent } = await flood(count);
  let maxAhead = 0;
  for (let k = 0; k < count; k++) {
    const m = await conn.recv();
    expect(m.type).toBe(MsgType.Literal);
    expect(m.type === MsgType.Literal && m.data.length === MAX_LITERAL && m.data[MAX_LITERAL - 1] === 7).toBe(true);
    // A slow sink: bytes read but not yet taken stay bounded while it writes.
    await sleep(10);
    maxAhead = Math.max(maxAhead, conn.bytesIn - (k + 1) * MAX_LITERAL);
  }
  expect(conn.bytesIn).toBe(sent);
  expect(maxAhead).toBeLessThanOrEqual(QUEUE_BYTES + MAX_LITERAL + 256 * 1024);
});

/**
 * Send a mixed run of ops (literals up to MAX_LITERAL, copies) and check that every one arrives as sent.
 * Returns the most out buffers the sender had handed to its stream and not got back, seen after each send.
 */
async function roundTrip(sender: Connection, receiver: Connection): Promise<number> {
  sender.session.step = () => 'delta-ops';
  receiver.session.step = () => 'delta-ops';
  const sizes = Array.from({ length: 120 }, (_, k) => [100, 5000, 300 * 1024, MAX_LITERAL, 64 * 1024][k % 5]!);
  let inFlight = 0;
  const sending = (async () => {
    // One input buffer, overwritten for every op: the connection must have taken its bytes when send returns.
    const input = Buffer.alloc(MAX_LITERAL);
    for (const [k, n] of sizes.entries()) {
      input.fill(k & 255, 0, n);
      await sender.send({ type: MsgType.Literal, data: input.subarray(0, n) });
      inFlight = Math.max(inFlight, sender.outInFlight);
      await sender.send({ type: MsgType.Copy, offset: k, length: n });
    }
  })();
  for (const [k, n] of sizes.entries()) {
    const lit = await receiver.recv();
    expect(lit.type === MsgType.Literal && lit.data.length === n && lit.data.every((b) => b === (k & 255))).toBe(true);
    expect(await receiver.recv()).toEqual({ type: MsgType.Copy, offset: k, length: n });
    // A slow reader now and then, so the sender's socket buffer fills and its buffers wait to be written.
    if (k % 10 === 0) await sleep(20);
  }
  await sending;
  return inFlight;
}

/** Two connections over a real TCP socket on 127.0.0.1, preambles exchanged. */
async function tcpPair(): Promise<{ sender: Connection; receiver: Connection }> {
  server = createServer((s) => sockets.push(s));
  await new Promise<void>((r) => server!.listen(0, '127.0.0.1', r));
  const accepted = new Promise<Socket>((r) => server!.once('connection', r));
  const sock = connect((server.address() as { port: number }).port, '127.0.0.1');
  sockets.push(sock);
  const sender = new Connection(sock, 'client', { idleTimeoutMs: 10_000 });
  const receiver = new Connection(await accepted, 'server', { idleTimeoutMs: 10_000 });
  await Promise.all([sender.exchangePreamble(), receiver.exchangePreamble()]);
  return { sender, receiver };
}

/** As tcpPair, over sockets that read into one buffer of their own each (as resync's client and server do). */
async function ownReadsPair(): Promise<{ sender: Connection; receiver: Connection }> {
  const srv = createServer({ pauseOnConnect: true });
  server = srv;
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const accepted = new Promise<Socket>((r) => srv.once('connection', (s: Socket) => r(adoptOwnReads(s))));
  const sock = ownReadsConnect('127.0.0.1', (srv.address() as { port: number }).port);
  sockets.push(sock);
  await new Promise((r) => sock.once('connect', r));
  const theirs = await accepted;
  sockets.push(theirs);
  expect(hasOwnReads(sock) && hasOwnReads(theirs)).toBe(true);
  const sender = new Connection(sock, 'client', { idleTimeoutMs: 10_000 });
  const receiver = new Connection(theirs, 'server', { idleTimeoutMs: 10_000 });
  await Promise.all([sender.exchangePreamble(), receiver.exchangePreamble()]);
  return { sender, receiver };
}

test('over sockets that read into one buffer of their own, messages queued while more is read keep their bytes, lending or not', async () => {
  for (const lend of [false, true]) {
    const { sender, receiver } = await ownReadsPair();
    receiver.lendPayloads(lend);
    await roundTrip(sender, receiver);
    // And the other way: the server's replies reach the client whole too.
    await roundTrip(receiver, sender);
    sender.destroy();
    receiver.destroy();
    server?.close();
  }
});

test('a connection that ends while its reading is stopped (a full queue) still reads the peer\'s end, and closes on it', async () => {
  const { sender, receiver } = await ownReadsPair();
  sender.session.step = () => 'delta-ops';
  receiver.session.step = () => 'delta-ops';
  // More than the receive queue holds, never taken: the receiver stops reading.
  const data = Buffer.alloc(MAX_LITERAL, 1);
  const sending = (async () => {
    for (let k = 0; k < 8; k++) await sender.send({ type: MsgType.Literal, data });
  })();
  await sleep(200);
  const closed = new Promise<void>((r) => receiver.socket.once('close', () => r()));
  receiver.end();
  await sending.catch(() => undefined);
  sender.end();
  await closed;
  // Closed by the peer's FIN, read and dropped, not by the timer that destroys an unfinished socket.
  expect((receiver.socket as Socket).readableEnded).toBe(true);
});

test('ops sent over a socket arrive as sent while the sender reuses its frame buffers', async () => {
  const { sender, receiver } = await tcpPair();
  const inFlight = await roundTrip(sender, receiver);
  // 37 MiB of frames through 256 KiB buffers: the same few again and again (a
  // new one for every write left the sender's frames to V8 until a GC), and no
  // more of them out at once than 1 MiB of them, although a sender whose sends
  // resolve at once gets its write callbacks only when it waits.
  expect(sender.outAllocated).toBeLessThanOrEqual(OUT_BUFFERS_BOUND);
  expect(inFlight).toBeLessThanOrEqual(OUT_BUFFERS_BOUND);
});

test('a receiver lending its payloads reassembles large frames in its ring, each given back at the next recv', async () => {
  const { sender, receiver } = await tcpPair();
  receiver.lendPayloads(true);
  // roundTrip checks each literal before it takes the next message, as a receiver that copies them does.
  await roundTrip(sender, receiver);
  // The literals went through the ring (only a few got memory of their own while it grew), and only the last message is still out.
  expect(receiver.lent.misses).toBeLessThanOrEqual(8);
  expect(receiver.lent.inUse).toBeLessThan(64);
  expect(receiver.lent.size).toBeLessThanOrEqual(QUEUE_BYTES + 3 * (MAX_LITERAL + 64));
});

test('ops sent through pipes (as to ssh) arrive as sent: a pipe may call back before its chunk is written, so no buffer is reused', async () => {
  const { PassThrough } = await import('node:stream');
  const { PipeDuplex } = await import('../../src/net/pipes.js');
  const aToB = new PassThrough({ highWaterMark: 64 * 1024 });
  const bToA = new PassThrough();
  const sender = new Connection(new PipeDuplex(bToA, aToB), 'client', { idleTimeoutMs: 10_000 });
  const receiver = new Connection(new PipeDuplex(aToB, bToA), 'server', { idleTimeoutMs: 10_000 });
  await Promise.all([sender.exchangePreamble(), receiver.exchangePreamble()]);
  await roundTrip(sender, receiver);
  sender.destroy();
  receiver.destroy();
});

test('a pipe to an ssh session that the far side stopped reading is named for the session, not reported as EPIPE', async () => {
  const { PassThrough } = await import('node:stream');
  const { PipeDuplex } = await import('../../src/net/pipes.js');
  const fromFar = new PassThrough();
  const toFar = new PassThrough();
  const conn = new Connection(new PipeDuplex(fromFar, toFar, undefined, 'the ssh session to dr'), 'client', { idleTimeoutMs: 10_000 });
  // The far side (ssh, or the resync it runs) exits: its stdin goes away.
  toFar.destroy();
  const err = await conn.send({ type: MsgType.Hello, version: 1, caps: [] }).then(
    () => conn.recv(),
  ).catch((e: unknown) => e);
  expect(err).toMatchObject({ code: 'ERR_CONNECTION', message: 'the ssh session to dr ended: the far side stopped reading (ssh, or the resync it runs there, exited)' });
  conn.destroy();
});

test('an ssh session that ends (ssh killed, the link gone) is named in the words of the close', async () => {
  const { PassThrough } = await import('node:stream');
  const { PipeDuplex } = await import('../../src/net/pipes.js');
  const fromFar = new PassThrough();
  const conn = new Connection(new PipeDuplex(fromFar, new PassThrough(), undefined, 'the ssh session to dr'), 'client', { idleTimeoutMs: 10_000 });
  const next = conn.recv().catch((e: unknown) => e);
  fromFar.end();
  expect(await next).toMatchObject({ code: 'ERR_CONNECTION', message: expect.stringMatching(/^the server \(the ssh session to dr\) closed the connection/) });
  conn.destroy();
});
