/**
 * A push to several replicas at once (net/fanout.ts) against in-process
 * servers on 127.0.0.1: every replica ends byte-equal to the primary, the
 * primary's hash pass is read once for all of them, replicas with different
 * block sizes still share it, and a replica that fails (wrong secret, no
 * server) or is slow (--bwlimit) neither stops nor slows nor corrupts the
 * others. Killing a real server mid-push is in replicas-cli.test.ts.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { pushToReplicas } from '../../src/net/fanout.js';
import { closeServers, replicaOf, startReplica, startServer, type TestServer } from '../helpers/server.js';
import { FaultProxy } from '../helpers/fault-proxy.js';
import { isSyncError } from '../../src/core/errors.js';

const MiB = 1024 * 1024;
const SIZE = 8 * MiB + 4321;

let dir: string;
const servers: TestServer[] = [];
let primary: Buffer;
const p = (...parts: string[]): string => join(dir, ...parts);

/** A server with one writable volume `vol` at `name`, holding `content`. */
async function replica(name: string, content: Buffer): Promise<TestServer> {
  const s = await startReplica(p(name), content);
  servers.push(s);
  return s;
}

const to = replicaOf;

/** The primary with a few scattered edits: what a replica one update behind holds. */
function older(): Buffer {
  const b = Buffer.from(primary);
  for (let k = 0; k < 20; k++) randomBytes(3000).copy(b, Math.floor((k * b.length) / 21));
  return b;
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'resync-replicas-'));
  primary = randomBytes(SIZE);
  await writeFile(p('primary.img'), primary);
});

afterAll(async () => {
  await closeServers(servers);
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('push to several replicas', () => {
  test('three replicas (empty, one update behind, larger with another block size) end equal to the primary from one read', async () => {
    const a = await replica('a.img', Buffer.alloc(0));
    const b = await replica('b.img', older());
    // Four times larger: its server picks a larger default block size.
    const c = await replica('c.img', randomBytes(4 * SIZE));
    const r = await pushToReplicas(p('primary.img'), [to(a), to(b), to(c)]);
    // a and b took the same seed and block size (a one-level signature, b two-level): one hash pass; c another.
    expect(r.hashPasses).toBe(2);
    for (const o of r.replicas) expect(o.ok, o.ok ? '' : String((o as { error: unknown }).error)).toBe(true);
    for (const f of ['a.img', 'b.img', 'c.img']) expect((await readFile(p(f))).equals(primary), f).toBe(true);
    const res = r.replicas.map((o) => (o.ok ? o.result : null));
    expect(new Set(res.map((x) => x!.blockSize)).size).toBeGreaterThan(1);
    expect(res.every((x) => x!.verified)).toBe(true);
    // b was one update behind: most of it matched.
    expect(res[1]!.literalBytes).toBeLessThan(SIZE / 4);
    expect(res[0]!.literalBytes).toBe(SIZE);
    // The hash pass read the primary once for all three.
    expect(r.replicas.every((o) => o.ok && o.sharedRead)).toBe(true);
    expect(r.read).not.toBeNull();
    expect(r.read!.sharedBytes).toBe(SIZE);
    expect(r.read!.ownBytes).toBe(0);
    expect(r.read!.maxHeld).toBeLessThanOrEqual(4);
  });

  test('without the shared seed, each replica hashes for itself but the reads are still shared, within the window', async () => {
    const reps = await Promise.all(['h.img', 'i.img', 'j.img'].map(async (f) => to(await replica(f, older()))));
    const r = await pushToReplicas(p('primary.img'), reps, { sharedSeed: false, window: 2 });
    expect(r.replicas.every((o) => o.ok && o.sharedRead)).toBe(true);
    expect(r.hashPasses).toBe(3);
    expect(r.read!.sharedBytes).toBe(SIZE);
    expect(r.read!.ownBytes).toBe(0);
    expect(r.read!.maxHeld).toBeLessThanOrEqual(2);
    for (const f of ['h.img', 'i.img', 'j.img']) expect((await readFile(p(f))).equals(primary), f).toBe(true);
  });

  test('a replica with the wrong secret and one with no server fail alone; the others are updated', async () => {
    const a = await replica('d.img', older());
    const b = await replica('e.img', older());
    const before = await readFile(p('e.img'));
    const gone = await startServer({ vol: { path: p('nothing.img'), writable: true } });
    const gonePort = gone.port;
    await gone.server.close();
    await rm(gone.dir, { recursive: true, force: true });
    const r = await pushToReplicas(p('primary.img'), [
      to(a),
      to(b, { secret: Buffer.from('not the secret of this server at all') }),
      { remote: `127.0.0.1:${gonePort}/vol`, opts: { host: '127.0.0.1', port: gonePort, volume: 'vol', secret: a.secret } },
    ]);
    expect(r.replicas.map((o) => o.ok)).toEqual([true, false, false]);
    const codes = r.replicas.map((o) => (o.ok ? null : isSyncError(o.error) ? o.error.code : String(o.error)));
    expect(codes).toEqual([null, 'ERR_AUTH', 'ERR_CONNECTION']);
    expect((await readFile(p('d.img'))).equals(primary)).toBe(true);
    expect((await readFile(p('e.img'))).equals(before)).toBe(true);
  });

  test('replicas slow to connect (a login over ssh) still wait for each other: one seed and one read', async () => {
    const a = await replica('k.img', older());
    const b = await replica('l.img', older());
    // Every connection's first answer from its server is held: 600 and 900 ms of "login", against a join wait of 100.
    const pa = await FaultProxy.start(a.port, { down: { stall: { ms: 600 } } });
    const pb = await FaultProxy.start(b.port, { down: { stall: { ms: 900 } } });
    try {
      const r = await pushToReplicas(p('primary.img'), [to(a, {}, pa.port), to(b, {}, pb.port)], { joinWaitMs: 100 });
      expect(r.replicas.map((o) => o.ok)).toEqual([true, true]);
      expect(pa.count('stall') + pb.count('stall')).toBe(2);
      expect(r.hashPasses).toBe(1);
      expect(r.replicas.every((o) => o.ok && o.sharedRead)).toBe(true);
      for (const f of ['k.img', 'l.img']) expect((await readFile(p(f))).equals(primary), f).toBe(true);
    } finally {
      await Promise.all([pa.close(), pb.close()]);
    }
  });

  test('a slow replica (--bwlimit) does not slow the others', async () => {
    const fast = await replica('f.img', Buffer.alloc(0));
    const slow = await replica('g.img', Buffer.alloc(0));
    // 8 MiB of literal data at 2 MiB/s: about 4 s for the slow one.
    const r = await pushToReplicas(p('primary.img'), [to(fast), to(slow, { bwlimit: 2 * MiB })]);
    expect(r.replicas.map((o) => o.ok)).toEqual([true, true]);
    const [f, s] = r.replicas.map((o) => (o.ok ? o.result : null));
    expect(s!.elapsedMs).toBeGreaterThan(3000);
    expect(f!.elapsedMs).toBeLessThan(s!.elapsedMs / 2);
    // One hash pass for both; the slow one's delta goes at its own pace: the same signature (both were
    // empty), but held to another rate, so each has a delta scan of its own.
    expect(r.hashPasses).toBe(1);
    expect(r.scans).toEqual({ scans: 2, sharedScans: 0, detached: 0 });
    for (const x of ['f.img', 'g.img']) expect((await readFile(p(x))).equals(primary), x).toBe(true);
  });
});
