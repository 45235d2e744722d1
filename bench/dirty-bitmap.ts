/**
 * Dirty-bitmap push against a full push, on a qcow2 image exported by
 * qemu-nbd: the image is filled with random data and synced to a replica, a
 * persistent bitmap is added, `--percent` of its clusters are rewritten with
 * qemu-io, then `resync push NBD ...` and `resync push --dirty-bitmap ...`
 * alternate, each from the same replica state (the changed clusters' old
 * bytes are put back between runs), and a third kind: the dirty push that
 * verifies the whole image by hashes, from the state a full push from the
 * export left (replica, its signature cache and the primary's digest cache:
 * the replica is put back by a push of the old image, the digest cache by a
 * copy). Reports medians of wall time and of the bytes each side read, and
 * writes them as a section of docs/benchmarks.md (kept there when `npm run
 * bench` rewrites the rest).
 *
 *   npm run build && node dist/bench/dirty-bitmap.js [--size 4G] [--percent 1] [--runs 3] [--seed 1]
 *                                                      [--tmp DIR] [--out docs/benchmarks.md]
 *
 * Skipped, with a note, when qemu-img, qemu-io or qemu-nbd is missing.
 */
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { copyFile, mkdtemp, open, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { randomBytes } from '../src/testing/workload.js';
import { median } from './measure.js';
import { DIRTY_BITMAP_HEADING, replaceSection } from './report.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const CLI = join(ROOT, 'bin', 'resync.js');
const CLUSTER = 64 * 1024;
const MiB = 1 << 20;


const { values } = parseArgs({
  options: {
    size: { type: 'string', default: '4G' },
    percent: { type: 'string', default: '1' },
    runs: { type: 'string', default: '3' },
    seed: { type: 'string', default: '1' },
    tmp: { type: 'string' },
    out: { type: 'string', default: 'docs/benchmarks.md' },
  },
});

function parseSize(s: string): number {
  const m = /^(\d+)([KMG]?)$/i.exec(s);
  if (!m) throw new Error(`bad size ${s}`);
  return Number(m[1]) * ({ '': 1, K: 1024, M: MiB, G: 1024 * MiB } as Record<string, number>)[m[2]!.toUpperCase()]!;
}

const fmt = (b: number): string => (b >= 1024 * MiB ? `${(b / 1024 / MiB).toFixed(2)} GiB` : `${(b / MiB).toFixed(1)} MiB`);

/** Bytes a process has read through read(2)-like calls so far (/proc/PID/io rchar). */
async function rchar(pid: number): Promise<number> {
  const io = await readFile(`/proc/${pid}/io`, 'utf8');
  return Number(/^rchar: (\d+)$/m.exec(io)![1]);
}

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const p = (s.address() as { port: number }).port;
  await new Promise<void>((r) => s.close(() => r()));
  return p;
}

function run(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 64 * MiB });
}

/** Stop a qemu-nbd and wait until it is gone (it has released the image then). */
async function stopExport(pid: number): Promise<void> {
  process.kill(pid, 'SIGTERM');
  for (let i = 0; i < 200; i++) {
    try {
      process.kill(pid, 0);
    } catch {
      return;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function main(): Promise<void> {
  if (!['qemu-img', 'qemu-io', 'qemu-nbd'].every((t) => spawnSync(t, ['--version'], { stdio: 'ignore' }).status === 0)) {
    console.log('dirty-bitmap bench skipped: qemu-img, qemu-io and qemu-nbd are needed (Debian: apt-get install qemu-utils)');
    return;
  }
  const size = parseSize(values.size!);
  const percent = Number(values.percent);
  const runs = Number(values.runs);
  const seed = Number(values.seed);
  const dir = await mkdtemp(join(values.tmp ?? tmpdir(), 'resync-dirty-bench-'));
  const children: ChildProcess[] = [];
  let nbdPid = 0;
  const cleanup = async (): Promise<void> => {
    for (const c of children) c.kill('SIGTERM');
    if (nbdPid) {
      try {
        process.kill(nbdPid, 'SIGTERM');
      } catch {
        // gone already
      }
    }
    await rm(dir, { recursive: true, force: true });
  };
  process.on('SIGINT', () => void cleanup().then(() => process.exit(130)));
  try {
    const load0 = loadavg()[0]!;
    const replica = join(dir, 'replica.img');
    const primary = join(dir, 'primary.qcow2');
    console.log(`making a ${fmt(size)} image of random data (seed ${seed})...`);
    const fh = await open(replica, 'w');
    for (let at = 0; at < size; at += 64 * MiB) await fh.write(randomBytes(seed, Math.min(64 * MiB, size - at), at), 0, Math.min(64 * MiB, size - at), at);
    await fh.close();
    run('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', replica, primary]);
    // The old image, kept to put the replica back through resync (its signature cache stays valid that way).
    const old = join(dir, 'old.raw');
    run('cp', ['--reflink=auto', replica, old]);
    const sock = join(dir, 'nbd.sock');
    const pidFile = join(dir, 'nbd.pid');
    const uri = `nbd+unix:///vm?socket=${sock}`;
    const exportPrimary = async (bitmap: boolean): Promise<void> => {
      run('qemu-nbd', ['--fork', '--persistent', '--pid-file', pidFile, '-r', '-f', 'qcow2', '-x', 'vm', ...(bitmap ? ['-B', 'since-sync'] : []), '-k', sock, primary]);
      nbdPid = Number((await readFile(pidFile, 'utf8')).trim());
    };
    const secret = join(dir, 'secret');
    await writeFile(secret, 'bench-secret-0123456789abcdef\n', { mode: 0o600 });
    const port = await freePort();
    const remote = `127.0.0.1:${port}/vm`;
    const server = spawn(process.execPath, [CLI, 'serve', '--listen', `127.0.0.1:${port}`, '--volume', `vm=${replica}:rw`, '--secret-file', secret], { stdio: ['ignore', 'ignore', 'pipe'] });
    children.push(server);
    server.stderr!.resume();
    await new Promise((r) => setTimeout(r, 1500));
    // The last full sync, from the export: the replica keeps its signature cache, the export its digest cache.
    const state = join(dir, 'state');
    await exportPrimary(false);
    run(process.execPath, [CLI, 'push', '--json', '--secret-file', secret, '--state-dir', state, uri, remote]);
    await stopExport(nbdPid);
    const [cacheName] = (await readdir(state)).filter((f) => f.startsWith('digests-'));
    const digestCache = join(state, cacheName!);
    const synced = join(dir, 'digests-synced');
    await copyFile(digestCache, synced);

    const clusters = size / CLUSTER;
    const n = Math.max(1, Math.round((clusters * percent) / 100));
    // Distinct clusters from a seeded generator (xorshift32).
    const chosen = new Set<number>();
    let x = (seed * 2654435761) >>> 0 || 1;
    while (chosen.size < n) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      x >>>= 0;
      chosen.add(x % clusters);
    }
    const offsets = [...chosen].sort((a, b) => a - b).map((c) => c * CLUSTER);
    // Old bytes of the changed clusters, to put the replica back between runs.
    const rfh = await open(replica, 'r');
    const saved = await Promise.all(offsets.map(async (o) => (await rfh.read(Buffer.alloc(CLUSTER), 0, CLUSTER, o)).buffer));
    await rfh.close();
    // The bitmap starts at the full sync.
    run('qemu-img', ['bitmap', '--add', primary, 'since-sync']);
    console.log(`rewriting ${offsets.length} of ${clusters} clusters (${percent} %) with qemu-io...`);
    for (let i = 0; i < offsets.length; i += 500) {
      run('qemu-io', ['-f', 'qcow2', ...offsets.slice(i, i + 500).flatMap((o, k) => ['-c', `write -P 0x${((i + k) % 255 + 1).toString(16)} ${o} ${CLUSTER}`]), primary]);
    }
    await exportPrimary(true);

    // Behind resync's back: fast, but the replica's signature cache no longer holds.
    const reset = async (): Promise<void> => {
      const w = await open(replica, 'r+');
      for (const [i, o] of offsets.entries()) await w.write(saved[i]!, 0, CLUSTER, o);
      await w.sync();
      await w.close();
    };
    // Through resync, as the full sync left it: a push of the old image (its cache rewritten), the digest cache put back.
    const resetSynced = async (): Promise<void> => {
      run(process.execPath, [CLI, 'push', '--json', '--secret-file', secret, old, remote]);
      await copyFile(synced, digestCache);
    };
    interface Sample {
      wallMs: number;
      primaryRead: number;
      serverRead: number;
      literal: number;
      scope: string;
    }
    const push = async (kind: 'full' | 'dirty' | 'image'): Promise<Sample> => {
      await (kind === 'image' ? resetSynced() : reset());
      const [p0, s0] = [await rchar(nbdPid), await rchar(server.pid!)];
      const t0 = performance.now();
      const args = kind === 'full' ? ['--no-digest-cache'] : kind === 'dirty' ? ['--dirty-bitmap', 'since-sync', '--no-digest-cache'] : ['--dirty-bitmap', 'since-sync', '--state-dir', state];
      const out = run(process.execPath, [CLI, 'push', '--json', '--secret-file', secret, ...args, uri, remote]);
      const wallMs = performance.now() - t0;
      const s = JSON.parse(out.trim().split('\n').pop()!) as Record<string, number | string>;
      const [p1, s1] = [await rchar(nbdPid), await rchar(server.pid!)];
      // The server's reads less what came over the connection: what it read of the volume (and its cache).
      return { wallMs, primaryRead: p1 - p0, serverRead: s1 - s0 - Number(s.bytesSent), literal: Number(s.literalBytes), scope: String(s.verifiedScope ?? 'image') };
    };
    const full: Sample[] = [];
    const dirty: Sample[] = [];
    const image: Sample[] = [];
    // Scope "image" first: a replica changed behind resync's back (reset) leaves no cache, and the next
    // one is made under another seed than the digest cache's, as documented; only a full sync mends that.
    for (let r = 0; r < runs; r++) {
      image.push(await push('image'));
      console.log(`run ${r + 1}: dirty ${image[r]!.wallMs.toFixed(0)} ms (${image[r]!.scope})`);
    }
    for (let r = 0; r < runs; r++) {
      full.push(await push('full'));
      dirty.push(await push('dirty'));
      console.log(`run ${r + 1}: full ${full[r]!.wallMs.toFixed(0)} ms, dirty ${dirty[r]!.wallMs.toFixed(0)} ms (${dirty[r]!.scope})`);
    }
    const cmp = spawnSync('qemu-img', ['compare', '-f', 'qcow2', '-F', 'raw', primary, replica], { encoding: 'utf8' });
    const same = cmp.status === 0;
    const med = (xs: Sample[], k: Exclude<keyof Sample, 'scope'>): number => median(xs.map((x) => x[k]));
    const rows = [
      ['full push', full],
      ['--dirty-bitmap, scope "dirty" (no valid signature cache on the replica)', dirty],
      [`--dirty-bitmap, scope "${image[0]!.scope}" (both caches from the full sync)`, image],
    ] as const;
    const ratio = (k: Exclude<keyof Sample, 'scope'>, of: Sample[] = dirty): string => (med(full, k) / Math.max(1, med(of, k))).toFixed(1);
    const primaryRatio = med(full, 'primaryRead') / Math.max(1, med(dirty, 'primaryRead'));
    const wallRatio = med(full, 'wallMs') / med(dirty, 'wallMs');
    const body = [
      `${fmt(size)} qcow2 image of random data, exported by qemu-nbd on a unix socket; ${offsets.length} of its ${clusters} 64 KiB clusters (${percent} %) rewritten with qemu-io after \`qemu-img bitmap --add\`; the replica a raw file behind \`resync serve\` on 127.0.0.1, put back to its old state before every run: by writing the old clusters back for the first two rows (alternating), by a push of the old image (which keeps its signature cache) and a copy of the export's digest cache as the full sync left it for the third (run first). Medians of ${runs} run(s) each; 1-minute load ${load0.toFixed(1)} at start. Bytes read: qemu-nbd's \`rchar\` (the primary's image), and the server's \`rchar\` less the bytes it received (its volume).`,
      '',
      `Reproduce: \`npm run build && node dist/bench/dirty-bitmap.js --size ${values.size} --percent ${percent} --runs ${runs} --seed ${seed}\``,
      '',
      '| push | wall | primary image read | replica read | literal sent |',
      '| --- | ---: | ---: | ---: | ---: |',
      ...rows.map(([name, xs]) => `| ${name} | ${(med(xs, 'wallMs') / 1000).toFixed(2)} s | ${fmt(med(xs, 'primaryRead'))} | ${fmt(med(xs, 'serverRead'))} | ${fmt(med(xs, 'literal'))} |`),
      `| full / second row | ${ratio('wallMs')}x | ${ratio('primaryRead')}x | ${ratio('serverRead')}x | |`,
      `| full / third row | ${ratio('wallMs', image)}x | ${ratio('primaryRead', image)}x | ${ratio('serverRead', image)}x | |`,
      '',
      `Goals (issue 18): at least 10x less read — ${primaryRatio >= 10 ? 'met' : 'MISSED'} (${primaryRatio.toFixed(1)}x on the primary); at least 5x less wall time — ${wallRatio >= 5 ? 'met' : 'MISSED'} (${wallRatio.toFixed(1)}x). Replica equal to the primary afterwards (\`qemu-img compare\`): ${same ? 'yes' : 'NO'}.`,
      '',
      'A dirty push always verifies the dirty blocks (both sides hash their final contents). With scope "image" it verifies the whole image too, by the image hash over every block\'s digest, from the replica\'s signature cache and the export\'s digest cache, still trusting the bitmap for the blocks it does not read (docs/protecting-a-running-vm.md). The replica reads the dirty blocks three times without its cache (for their sums, to save their old bytes before rewriting them, and to verify them after the flush) and twice with it (the sums come from the cache, which it reads, 36 bytes a block, and writes again).',
    ].join('\n');
    console.log(`\n${DIRTY_BITMAP_HEADING}\n\n${body}\n`);
    const outPath = join(ROOT, values.out!);
    const prev = await readFile(outPath, 'utf8').catch(() => '');
    await writeFile(outPath, replaceSection(prev, DIRTY_BITMAP_HEADING, body));
    console.log(`written to ${values.out}`);
    if (!same) process.exitCode = 1;
  } finally {
    await cleanup();
  }
}

await main();
