/**
 * One delta scan for several replicas (net/shared-scan.ts), against
 * in-process servers on 127.0.0.1 with real files: replicas whose signatures
 * are identical get their ops from one scan and end byte-equal to the
 * primary; replicas with different bases, or held to different --bwlimit
 * rates, scan each for itself; a replica
 * whose connection dies mid-delta fails alone; one that stalls is detached
 * onto a scan of its own and neither holds the other up nor ends wrong.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { pushToReplicas, type ReplicaOutcome } from '../../src/net/fanout.js';
import type { SyncResult } from '../../src/net/client.js';
import { closeServers, replicaOf, startReplica, type TestServer } from '../helpers/server.js';
import { FaultProxy } from '../helpers/fault-proxy.js';

const MiB = 1024 * 1024;
const SIZE = 24 * MiB + 777;

let dir: string;
const servers: TestServer[] = [];
const proxies: FaultProxy[] = [];
let primary: Buffer;
const p = (...parts: string[]): string => join(dir, ...parts);

async function replica(name: string, content: Buffer): Promise<TestServer> {
  const s = await startReplica(p(name), content);
  servers.push(s);
  return s;
}

const to = replicaOf;

const bases = new Map<number, Buffer>();
/**
 * The primary with 40 scattered writes of 3000 bytes, the same for the same
 * `seed`: changed blocks next to unchanged ones, so sub-block sums are asked for.
 */
function scattered(seed: number): Buffer {
  let b = bases.get(seed);
  if (!b) {
    b = Buffer.from(primary);
    for (let k = 0; k < 40; k++) randomBytes(3000).copy(b, Math.floor((((k * 7919 + seed * 104729) % 997) / 997) * (b.length - 4096)));
    bases.set(seed, b);
  }
  return b;
}

/** `of` with `every - 1` of each `every` pieces of 64 KiB rewritten: a long delta, with changed blocks next to unchanged ones. */
function rewritten(of: Buffer, every: number): Buffer {
  const b = Buffer.from(of);
  const junk = randomBytes(64 * 1024);
  for (let o = 0; o + 64 * 1024 <= b.length; o += 64 * 1024) if ((o / (64 * 1024)) % every !== 0) junk.copy(b, o);
  return b;
}

const results = (outs: ReplicaOutcome[]): SyncResult[] =>
  outs.map((o) => {
    if (!o.ok) throw new Error(`${o.remote} failed: ${String(o.error)}`);
    return o.result;
  });

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'resync-shared-scan-'));
  primary = randomBytes(SIZE);
  await writeFile(p('primary.img'), primary);
});

afterAll(async () => {
  for (const x of proxies) await x.close();
  await closeServers(servers);
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('one delta scan for several replicas', () => {
  test('replicas with the same base share one scan, get the same ops as a scan of their own would send, and end equal to the primary', async () => {
    const base = scattered(1);
    const a = await replica('a.img', base);
    const b = await replica('b.img', base);
    // b compresses its literals, a does not: each connection gets its own encoding of the same ops.
    // Blocks of 32 KiB: a 3000-byte write costs one or two sub-blocks of 4 KiB, or a whole block or two without them.
    const bs = { blockSize: 32 * 1024 };
    const r = await pushToReplicas(p('primary.img'), [to(a, bs), to(b, { ...bs, compress: true })]);
    const [ra, rb] = results(r.replicas);
    expect(r.scans).toEqual({ scans: 1, sharedScans: 1, detached: 0 });
    expect(r.replicas.map((o) => o.ok && o.sharedScan)).toEqual([true, true]);
    for (const f of ['a.img', 'b.img']) expect((await readFile(p(f))).equals(primary), f).toBe(true);
    expect(rb!.compression).toBeDefined();
    expect(ra!.compression).toBeUndefined();

    // The same push with a scan per replica: the shared ops are the ones each would have got alone,
    // sub-block matches included (the leader's sums served both).
    const c = await replica('c.img', base);
    const d = await replica('d.img', base);
    const alone = await pushToReplicas(p('primary.img'), [to(c, bs), to(d, { ...bs, compress: true })], { sharedScan: false });
    const [rc, rd] = results(alone.replicas);
    expect(alone.scans).toEqual({ scans: 2, sharedScans: 0, detached: 0 });
    for (const f of ['c.img', 'd.img']) expect((await readFile(p(f))).equals(primary), f).toBe(true);
    for (const [x, y] of [
      [ra!, rc!],
      [rb!, rd!],
    ] as const) {
      expect(x.literalBytes).toBe(y.literalBytes);
      expect(x.matchedBytes).toBe(y.matchedBytes);
      expect(x.copyOps).toBe(y.copyOps);
      expect(x.literalOps).toBe(y.literalOps);
    }
    // The small writes went as sub-blocks of 4 KiB (at most two each), not as whole blocks.
    expect(ra!.blockSize).toBe(32 * 1024);
    expect(ra!.literalBytes).toBeLessThanOrEqual(40 * 2 * 4096);
  });

  test('replicas with different bases scan each for itself; two alike among three share', async () => {
    const a = await replica('e.img', scattered(2));
    const b = await replica('f.img', scattered(3));
    const c = await replica('g.img', scattered(3));
    const r = await pushToReplicas(p('primary.img'), [to(a), to(b), to(c)]);
    results(r.replicas);
    expect(r.hashPasses).toBe(1);
    expect(r.scans).toEqual({ scans: 2, sharedScans: 1, detached: 0 });
    expect(r.replicas.map((o) => o.ok && o.sharedScan)).toEqual([false, true, true]);
    for (const f of ['e.img', 'f.img', 'g.img']) expect((await readFile(p(f))).equals(primary), f).toBe(true);
  });

  test('replicas held to the same --bwlimit share a scan; one held to another rate does not', async () => {
    const empty = Buffer.alloc(0);
    const [a, b, c] = [await replica('h.img', empty), await replica('i.img', empty), await replica('j.img', empty)];
    const rate = { bwlimit: 64 * MiB };
    const r = await pushToReplicas(p('primary.img'), [to(a, rate), to(b, rate), to(c, { bwlimit: 128 * MiB })]);
    results(r.replicas);
    expect(r.scans).toEqual({ scans: 2, sharedScans: 1, detached: 0 });
    expect(r.replicas.map((o) => o.ok && o.sharedScan)).toEqual([true, true, false]);
    for (const f of ['h.img', 'i.img', 'j.img']) expect((await readFile(p(f))).equals(primary), f).toBe(true);
  });

  test.each([0, 1])('replica %i of two sharing a scan, its connection cut mid-delta, fails alone; the other ends equal to the primary', async (dies) => {
    const base = rewritten(primary, 2);
    const a = await replica(`cut${dies}a.img`, base);
    const b = await replica(`cut${dies}b.img`, base);
    const s = [a, b][dies]!;
    // The deltas carry about 12 MiB of literals; the signature went the other way.
    const proxy = await FaultProxy.start(s.port, { up: { cutAfter: 3 * MiB, cutMode: 'reset' } });
    proxies.push(proxy);
    const reps = [to(a), to(b)];
    reps[dies] = to(s, {}, proxy.port);
    const r = await pushToReplicas(p('primary.img'), reps);
    expect(proxy.count('cut')).toBe(1);
    expect(r.scans.sharedScans).toBe(1);
    expect(r.replicas.map((o) => o.ok)).toEqual(dies === 0 ? [false, true] : [true, false]);
    const other = [`cut${dies}a.img`, `cut${dies}b.img`][1 - dies]!;
    expect((await readFile(p(other))).equals(primary)).toBe(true);
  });

  test.each([
    [0, 'the leader, asked for sub-block sums'],
    [1, 'a follower'],
  ])('replica %i (%s) that stalls mid-delta is detached onto its own scan: the other does not wait for it, and both end equal to the primary', async (stalls) => {
    // 48 MiB of literals: far more than the sockets, the proxy and the sender's queue hold, so the
    // stalled connection holds the scan up long before its delta is all sent.
    const big = randomBytes(64 * MiB);
    await writeFile(p(`stall${stalls}.img`), big);
    const base = rewritten(big, 4);
    const a = await replica(`stall${stalls}a.img`, base);
    const b = await replica(`stall${stalls}b.img`, base);
    const s = [a, b][stalls]!;
    const STALL_MS = 8000;
    const proxy = await FaultProxy.start(s.port, { up: { stall: { after: 256 * 1024, ms: STALL_MS } } });
    proxies.push(proxy);
    const reps = [to(a), to(b)];
    reps[stalls] = to(s, {}, proxy.port);
    const r = await pushToReplicas(p(`stall${stalls}.img`), reps, { detachAfterMs: 300 });
    const rs = results(r.replicas);
    expect(proxy.count('stall')).toBe(1);
    expect(r.scans).toEqual({ scans: 2, sharedScans: 1, detached: 1 });
    // The other finished long before the stall ended; the stalled one after it.
    expect(rs[1 - stalls]!.elapsedMs).toBeLessThan(STALL_MS * 0.75);
    expect(rs[stalls]!.elapsedMs).toBeGreaterThan(STALL_MS);
    // The stalled one's ops came from two scans, and still build the primary.
    expect(rs.every((x) => x.verified)).toBe(true);
    for (const f of [`stall${stalls}a.img`, `stall${stalls}b.img`]) expect((await readFile(p(f))).equals(big), f).toBe(true);
    expect(rs[stalls]!.matchedBytes + rs[stalls]!.literalBytes).toBe(big.length);
  });
});
