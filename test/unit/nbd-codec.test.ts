/**
 * The NBD reply decoder and client against crafted replies: every bad reply
 * is a typed ERR_NBD, never a hang or an allocation of what a length claims.
 */
import { afterEach, describe, expect, test } from 'vitest';
import { createServer, type Server, type Socket } from 'node:net';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  NBD_IHAVEOPT,
  NBD_MAGIC,
  NBD_REP_MAGIC,
  NBD_SIMPLE_REPLY_MAGIC,
  NBD_STRUCTURED_REPLY_MAGIC,
  NbdCmd,
  NbdReply,
  ReplyDecoder,
  type PendingRequest,
  type ReplyEvent,
} from '../../src/io/nbd/codec.js';
import { NbdClient } from '../../src/io/nbd/client.js';
import { parseNbdUri } from '../../src/io/nbd/uri.js';

/** A structured reply chunk. */
function chunk(cookie: bigint, type: number, payload: Buffer, done = false): Buffer {
  const h = Buffer.alloc(20);
  h.writeUInt32BE(NBD_STRUCTURED_REPLY_MAGIC, 0);
  h.writeUInt16BE(done ? 1 : 0, 4);
  h.writeUInt16BE(type, 6);
  h.writeBigUInt64BE(cookie, 8);
  h.writeUInt32BE(payload.length, 16);
  return Buffer.concat([h, payload]);
}
function dataPayload(offset: number, data: Buffer): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(BigInt(offset));
  return Buffer.concat([b, data]);
}
function holePayload(offset: number, n: number): Buffer {
  const b = Buffer.alloc(12);
  b.writeBigUInt64BE(BigInt(offset));
  b.writeUInt32BE(n, 8);
  return b;
}
function errorPayload(errno: number, msg: string): Buffer {
  const m = Buffer.from(msg);
  const b = Buffer.alloc(6);
  b.writeUInt32BE(errno);
  b.writeUInt16BE(m.length, 4);
  return Buffer.concat([b, m]);
}

const READ: PendingRequest = { type: NbdCmd.READ, offset: 4096, length: 8192 };
const decoder = (r: PendingRequest = READ) => new ReplyDecoder((c) => (c === 7n ? r : null));

describe('ReplyDecoder', () => {
  const good = Buffer.concat([
    chunk(7n, NbdReply.OFFSET_DATA, dataPayload(4096, Buffer.alloc(4096, 0xab))),
    chunk(7n, NbdReply.OFFSET_HOLE, holePayload(8192, 4096), true),
  ]);

  test('data and hole chunks, fed whole and split at every byte', () => {
    const whole = decoder().push(good);
    expect(whole.map((e) => e.kind)).toEqual(['data', 'hole', 'done']);
    for (let cut = 1; cut < good.length; cut++) {
      const d = decoder();
      const ev: ReplyEvent[] = [...d.push(good.subarray(0, cut)).map((e) => ({ ...e }))];
      // Data events are views valid until the next push: compare their bytes now.
      const firstData = ev.find((e) => e.kind === 'data');
      const copy = firstData && firstData.kind === 'data' ? Buffer.from(firstData.data) : null;
      ev.push(...d.push(good.subarray(cut)));
      expect(ev.map((e) => e.kind)).toEqual(['data', 'hole', 'done']);
      if (copy) expect(copy.equals(Buffer.alloc(4096, 0xab))).toBe(true);
      expect(d.buffered).toBe(0);
    }
  });

  test('a simple reply carries the whole read', () => {
    const h = Buffer.alloc(16);
    h.writeUInt32BE(NBD_SIMPLE_REPLY_MAGIC, 0);
    h.writeBigUInt64BE(7n, 8);
    const d = decoder();
    expect(d.push(h)).toEqual([]);
    const ev = d.push(Buffer.alloc(8192, 1));
    expect(ev.map((e) => e.kind)).toEqual(['data', 'done']);
  });

  const bad: [string, Buffer, RegExp][] = [
    ['wrong magic', Buffer.from('deadbeef00000000000000000000000000000000', 'hex'), /bad reply magic 0xdeadbeef/],
    ['an unknown cookie', chunk(8n, NbdReply.NONE, Buffer.alloc(0), true), /no request in flight/],
    ['a data chunk past the request', chunk(7n, NbdReply.OFFSET_DATA, dataPayload(8192, Buffer.alloc(8192))), /outside the request/],
    ['a data chunk before the request', chunk(7n, NbdReply.OFFSET_DATA, dataPayload(0, Buffer.alloc(16))), /outside the request/],
    ['a hole past the request', chunk(7n, NbdReply.OFFSET_HOLE, holePayload(12000, 4096)), /outside the request/],
    ['an empty hole', chunk(7n, NbdReply.OFFSET_HOLE, holePayload(4096, 0)), /length 0/],
    ['a hole chunk of the wrong size', chunk(7n, NbdReply.OFFSET_HOLE, Buffer.alloc(16)), /12 expected/],
    ['a data chunk without data', chunk(7n, NbdReply.OFFSET_DATA, Buffer.alloc(8)), /data chunk of 8 bytes/],
    ['a block-status chunk for a read', chunk(7n, NbdReply.BLOCK_STATUS, Buffer.alloc(12)), /not a block-status request/],
    ['an error chunk whose message overruns it', chunk(7n, NbdReply.ERROR, Buffer.from('000000050009616263', 'hex')), /does not fit/],
    ['an error chunk with error 0', chunk(7n, NbdReply.ERROR, errorPayload(0, '')), /error number 0/],
    ['NONE without done', chunk(7n, NbdReply.NONE, Buffer.alloc(0)), /without the done flag/],
    ['an unknown chunk type', chunk(7n, 77, Buffer.alloc(0), true), /unknown type 77/],
    ['an offset beyond 2^53', chunk(7n, NbdReply.OFFSET_HOLE, Buffer.from('ffffffffffffffff00000001', 'hex')), /beyond 2\^53/],
  ];
  test.each(bad)('%s is ERR_NBD', (_what, bytes, msg) => {
    expect(() => decoder().push(bytes)).toThrow(expect.objectContaining({ code: 'ERR_NBD', message: expect.stringMatching(msg) }));
  });

  test('a huge length is refused from the header alone, before its payload is awaited or buffered', () => {
    const h = chunk(7n, NbdReply.OFFSET_DATA, Buffer.alloc(0));
    h.writeUInt32BE(0xfffffff0, 16);
    expect(() => decoder().push(h)).toThrow(expect.objectContaining({ code: 'ERR_NBD', message: expect.stringMatching(/larger than the request allows/) }));
    const s = chunk(7n, NbdReply.BLOCK_STATUS, Buffer.alloc(0));
    s.writeUInt32BE(0x7fffffff, 16);
    const bs = new ReplyDecoder(() => ({ type: NbdCmd.BLOCK_STATUS, offset: 0, length: 4096 }));
    expect(() => bs.push(s)).toThrow(expect.objectContaining({ code: 'ERR_NBD' }));
  });

  test('a truncated chunk is "need more", not an error', () => {
    const d = decoder();
    expect(d.push(good.subarray(0, 30))).toEqual([]);
    expect(d.buffered).toBe(30);
  });

  test('an error chunk is reported with its message', () => {
    const ev = decoder().push(chunk(7n, NbdReply.ERROR, errorPayload(5, 'disk on fire'), true));
    expect(ev).toEqual([{ kind: 'error', cookie: 7n, errno: 5, message: 'disk on fire' }, { kind: 'done', cookie: 7n }]);
  });
});

describe('NbdClient against a crafted server', () => {
  let server: Server | null = null;
  let dir: string | null = null;
  afterEach(async () => {
    await new Promise<void>((r) => (server ? server.close(() => r()) : r()));
    server = null;
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  /** A server that negotiates one 64 KiB export, then answers the first request with `reply(cookie)`. */
  async function crafted(reply: (cookie: bigint, sock: Socket) => void): Promise<string> {
    dir = await mkdtemp(join(tmpdir(), 'resync-nbdfake-'));
    const path = join(dir, 's');
    server = createServer((sock) => {
      sock.on('error', () => undefined);
      const g = Buffer.alloc(18);
      g.writeBigUInt64BE(NBD_MAGIC, 0);
      g.writeBigUInt64BE(NBD_IHAVEOPT, 8);
      g.writeUInt16BE(3, 16);
      sock.write(g);
      let buf = Buffer.alloc(0);
      let phase: 'flags' | 'opts' | 'tx' = 'flags';
      sock.on('data', (b: Buffer) => {
        buf = Buffer.concat([buf, b]);
        for (;;) {
          if (phase === 'flags') {
            if (buf.length < 4) return;
            buf = buf.subarray(4);
            phase = 'opts';
          } else if (phase === 'opts') {
            if (buf.length < 16) return;
            const opt = buf.readUInt32BE(8);
            const len = buf.readUInt32BE(12);
            if (buf.length < 16 + len) return;
            buf = buf.subarray(16 + len);
            const rep = (type: number, data: Buffer = Buffer.alloc(0)): void => {
              const h = Buffer.alloc(20);
              h.writeBigUInt64BE(NBD_REP_MAGIC, 0);
              h.writeUInt32BE(opt, 8);
              h.writeUInt32BE(type, 12);
              h.writeUInt32BE(data.length, 16);
              sock.write(Buffer.concat([h, data]));
            };
            if (opt === 7) {
              const info = Buffer.alloc(12);
              info.writeBigUInt64BE(65536n, 2);
              info.writeUInt16BE(1 | 4, 10);
              rep(3, info);
              rep(1);
              phase = 'tx';
            } else rep(1);
          } else {
            if (buf.length < 28) return;
            const cookie = buf.readBigUInt64BE(8);
            const disc = buf.readUInt16BE(6) === NbdCmd.DISC;
            buf = buf.subarray(28);
            if (!disc) reply(cookie, sock);
          }
        }
      });
    });
    await new Promise<void>((r) => server!.listen(path, r));
    return `nbd+unix:///x?socket=${path}`;
  }

  test('a reply past the request fails the read with ERR_NBD', async () => {
    const uri = await crafted((c, s) => s.write(chunk(c, NbdReply.OFFSET_DATA, dataPayload(60000, Buffer.alloc(8192)), true)));
    const c = await NbdClient.connect(parseNbdUri(uri));
    await expect(c.read(0, 4096)).rejects.toMatchObject({ code: 'ERR_NBD', message: /outside the request/ });
    await c.close();
  });

  test('a reply that covers only part of a read fails it', async () => {
    const uri = await crafted((c, s) => s.write(chunk(c, NbdReply.OFFSET_DATA, dataPayload(0, Buffer.alloc(1024)), true)));
    const c = await NbdClient.connect(parseNbdUri(uri));
    await expect(c.read(0, 4096)).rejects.toMatchObject({ code: 'ERR_NBD', message: /answered 1024 of 4096/ });
    await c.close();
  });

  test('a truncated reply followed by a close fails the read, no hang', async () => {
    const uri = await crafted((c, s) => s.end(chunk(c, NbdReply.OFFSET_DATA, dataPayload(0, Buffer.alloc(4096)), true).subarray(0, 100)));
    const c = await NbdClient.connect(parseNbdUri(uri));
    await expect(c.read(0, 4096)).rejects.toMatchObject({ code: 'ERR_NBD', message: /closed the connection/ });
    await c.close();
  });

  test('a server error is reported with its errno name', async () => {
    const uri = await crafted((c, s) => s.write(chunk(c, NbdReply.ERROR, errorPayload(5, 'bad sector'), true)));
    const c = await NbdClient.connect(parseNbdUri(uri));
    await expect(c.read(0, 4096)).rejects.toMatchObject({ code: 'ERR_NBD', message: /EIO \(bad sector\)/ });
    await c.close();
  });

  test('a request outside the export is refused before it is sent', async () => {
    const uri = await crafted(() => undefined);
    const c = await NbdClient.connect(parseNbdUri(uri));
    expect(c.size).toBe(65536);
    await expect(c.read(65000, 4096)).rejects.toMatchObject({ code: 'ERR_NBD', message: /outside the 65536-byte export/ });
    await c.close();
  });

  test('a server that never answers a request times out; an idle connection does not', async () => {
    const uri = await crafted(() => undefined);
    const c = await NbdClient.connect(parseNbdUri(uri), { timeoutMs: 300 });
    await new Promise((r) => setTimeout(r, 600));
    const t0 = Date.now();
    await expect(c.read(0, 4096)).rejects.toMatchObject({ code: 'ERR_TIMEOUT' });
    expect(Date.now() - t0).toBeLessThan(5000);
    await c.close();
  });
});

describe('NBD URIs', () => {
  test('tcp and unix forms', () => {
    expect(parseNbdUri('nbd://h.example:1234/vm%201')).toMatchObject({ host: 'h.example', port: 1234, exportName: 'vm 1' });
    expect(parseNbdUri('nbd://[::1]/x')).toMatchObject({ host: '::1', port: 10809, exportName: 'x' });
    expect(parseNbdUri('nbd+unix:///disk?socket=/run/q.sock')).toMatchObject({ socket: '/run/q.sock', exportName: 'disk' });
    expect(parseNbdUri('nbd+unix://?socket=/s')).toMatchObject({ exportName: '' });
  });
  test('TLS forms (nbds://, nbds+unix://): the certificate directory, and the name the server must carry', () => {
    expect(parseNbdUri('nbd://h/x').tls).toBeUndefined();
    expect(parseNbdUri('nbds://H.example:1234/vm?tls-certificates=/etc/pki/nbd')).toMatchObject({ host: 'H.example', port: 1234, exportName: 'vm', tls: { certificates: '/etc/pki/nbd', hostname: 'H.example' } });
    expect(parseNbdUri('nbds://127.0.0.1/x').tls).toEqual({ hostname: '127.0.0.1' });
    expect(parseNbdUri('nbds://127.0.0.1/x?tls-hostname=dr.example').tls).toEqual({ hostname: 'dr.example' });
    expect(parseNbdUri('nbds://h/x?tls-verify-hostname=no').tls).toEqual({ hostname: null });
    expect(parseNbdUri('nbds+unix:///vm?socket=/run/s&tls-hostname=localhost&tls-certificates=/c')).toMatchObject({ socket: '/run/s', exportName: 'vm', tls: { certificates: '/c', hostname: 'localhost' } });
    expect(parseNbdUri('nbds+unix:///vm?socket=/run/s&tls-verify-hostname=no').tls).toEqual({ hostname: null });
    expect(parseNbdUri('NBDS://h/x').tls).toBeDefined();
  });
  test.each([
    ['nbd+unix:///x', /needs \?socket=PATH/],
    ['nbd:///x', /needs a host/],
    ['nbd://h/x?tls=1', /unknown query parameter tls=.*takes none/],
    ['nbd://h/x?tls-certificates=/c', /applies to TLS only: use nbds:\/\//],
    ['nbd+unix:///x?socket=/s&tls-hostname=h', /applies to TLS only: use nbds\+unix:\/\//],
    ['nbds://h/x?socket=/s', /unknown query parameter socket=/],
    ['nbds+unix:///x?socket=/s', /needs tls-hostname=NAME .* or, to accept any name the trusted CA signed, tls-verify-hostname=no/],
    ['nbds+unix:///x?tls-hostname=h', /needs \?socket=PATH/],
    ['nbds://h/x?tls-verify-hostname=maybe', /takes yes or no/],
    ['nbds://h/x?tls-verify-hostname=no&tls-hostname=h', /contradict/],
    ['nbds://h/x?tls-certificates=', /needs a directory/],
    ['nbds://h/x?tls-certificates=/a&tls-certificates=/b', /given twice/],
    ['nbdx://h/x', /unsupported NBD URI scheme/],
  ])('%s is refused', (u, why) => {
    expect(() => parseNbdUri(u)).toThrow(expect.objectContaining({ code: 'ERR_PARAM', message: expect.stringMatching(why) }));
  });
});

describe('what an interrupted command says about an NBD target', () => {
  // An export is written under its undo journal in the state directory (io/nbd/undo.ts): the journal says
  // whether the export may be part-updated, as a file's journal does (it was "unknown" while the undo data
  // went with the process).
  test('a pull or in-place patch into an export: journaled while its journal is there, else unchanged', async () => {
    const { localInterrupted } = await import('../../src/cli/run.js');
    const { nbdJournalPath } = await import('../../src/io/nbd/journal-path.js');
    const state = await mkdtemp(join(tmpdir(), 'resync-nbd-state-'));
    try {
      const uri = 'nbd+unix:///vm1?socket=/run/vm1.sock';
      expect(localInterrupted(uri, 'the update had not started', 'run the same pull again', state)).toMatchObject({ target: uri, state: 'unchanged' });
      const journal = nbdJournalPath(state, uri);
      await writeFile(journal, 'x');
      expect(localInterrupted(uri, 'the update had not started', 'run the same pull again', state)).toMatchObject({
        target: uri,
        state: 'journaled',
        journal,
        resume: `run the same pull again (it rolls the export back first and starts over: an export's update does not resume), or \`resync recover '${uri}' --state-dir ${state}\` to roll it back`,
      });
    } finally {
      await rm(state, { recursive: true, force: true });
    }
  });
});
