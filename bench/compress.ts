/**
 * Compressed transfers on the real-content workloads: `resync push` with
 * zstd, DEFLATE and no compression against `rsync -z --compress-choice=zstd`
 * (and plain rsync) to an rsync daemon, all on 127.0.0.1. Every run starts
 * from the basis at the far end; the tools alternate, run by run, so that
 * load on a shared machine falls on all of them. Prints a Markdown table of
 * medians: bytes on the wire (both ways) and wall time.
 *
 *   node dist/bench/compress.js [--cache DIR] [--tmp DIR] [--runs 5] [--scenarios tar,sqlite]
 *
 * Needs `rsync` and the pairs of bench/real.ts (built into the cache on
 * first use, as `npm run bench` does).
 */
import { spawn } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { randomBytes } from 'node:crypto';
import { median, sha256File } from './measure.js';
import { parseRsyncStats, rsyncdConf, RSYNC_MODULE } from './peers.js';
import { prepareReal, REAL_SCENARIOS, type RealScenario } from './real.js';

const CLI = resolve('dist/src/cli/main.js');

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
  ms: number;
}

function run(cmd: string, args: readonly string[], env: Record<string, string> = {}): Promise<Run> {
  const t0 = performance.now();
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  return new Promise((res, rej) => {
    child.on('error', rej);
    child.on('close', (code) => res({ code, stdout, stderr, ms: performance.now() - t0 }));
  });
}

/** A long-running child that has printed `ready` on stdout or stderr (or into `logFile`). */
async function daemon(cmd: string, args: readonly string[], ready: RegExp, read: () => Promise<string>): Promise<{ stop(): Promise<void>; text: () => Promise<string> }> {
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr.on('data', (c: Buffer) => (out += c.toString()));
  const text = async (): Promise<string> => out + (await read());
  for (let t0 = Date.now(); !ready.test(await text()); ) {
    if (child.exitCode !== null || Date.now() - t0 > 15_000) throw new Error(`${cmd} did not start: ${await text()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    text,
    stop: async () => {
      if (child.exitCode !== null) return;
      const gone = new Promise((r) => child.once('close', r));
      child.kill('SIGTERM');
      await gone;
    },
  };
}

interface Variant {
  name: string;
  /** Run one transfer of `target` over a far end that holds the basis; wire bytes both ways. */
  push(): Promise<{ ms: number; wire: number }>;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      cache: { type: 'string' },
      tmp: { type: 'string' },
      runs: { type: 'string', default: '5' },
      scenarios: { type: 'string', default: 'tar,sqlite' },
    },
  });
  const runs = Number(values.runs);
  const scenarios = values.scenarios!.split(',') as RealScenario[];
  for (const s of scenarios) if (!REAL_SCENARIOS.includes(s)) throw new Error(`unknown scenario ${s}`);
  const base = values.tmp ?? tmpdir();
  const cache = resolve(values.cache ?? join(base, 'resync-bench-cache'));
  const tmp = await mkdtemp(join(base, 'resync-zbench-'));
  const log = (m: string): void => void process.stderr.write(`${m}\n`);
  const rows: string[] = [];
  try {
    const secret = join(tmp, 'secret');
    await writeFile(secret, randomBytes(24).toString('base64'), { mode: 0o600 });
    const vol = join(tmp, 'resync-vol.img');
    const mod = join(tmp, 'module');
    await mkdir(mod);
    const serve = await daemon(process.execPath, [CLI, 'serve', '--listen', '127.0.0.1:0', '--secret-file', secret, '--volume', `v=${vol}:rw`, '--log-level', 'info'], /listening on 127\.0\.0\.1:\d+/, async () => '');
    const port = Number(/listening on 127\.0\.0\.1:(\d+)/.exec(await serve.text())![1]);
    const rlog = join(tmp, 'rsyncd.log');
    await writeFile(join(tmp, 'rsyncd.conf'), rsyncdConf(tmp, mod));
    const rport = 20000 + Math.floor(Math.random() * 20000);
    const rsyncd = await daemon('rsync', ['--daemon', '--no-detach', '--port', String(rport), '--config', join(tmp, 'rsyncd.conf')], new RegExp(`listening on port ${rport}`), async () => {
      const { readFile } = await import('node:fs/promises');
      return readFile(rlog, 'utf8').catch(() => '');
    });
    try {
      for (const name of scenarios) {
        const pair = await prepareReal(name, cache, 1, log);
        const bs = Math.min(131072, Math.max(2048, 2 ** Math.round(Math.log2(Math.sqrt(pair.targetSize)))));
        const resync = (label: string, flags: string[]): Variant => ({
          name: label,
          push: async () => {
            await copyFile(pair.basis, vol);
            const r = await run(process.execPath, [CLI, 'push', '--json', '--secret-file', secret, '--block-size', String(bs), ...flags, pair.target, `127.0.0.1:${port}/v`]);
            if (r.code !== 0) throw new Error(`resync ${flags.join(' ')}: ${r.stderr}`);
            const j = JSON.parse(r.stdout) as { bytesSent: number; bytesReceived: number };
            return { ms: r.ms, wire: j.bytesSent + j.bytesReceived };
          },
        });
        const rsync = (label: string, flags: string[]): Variant => ({
          name: label,
          push: async () => {
            await copyFile(pair.basis, join(mod, 'vol.img'));
            const r = await run('rsync', ['--no-whole-file', '--inplace', '--stats', '--ignore-times', '-B', String(bs), ...flags, pair.target, `rsync://127.0.0.1:${rport}/${RSYNC_MODULE}/vol.img`]);
            if (r.code !== 0) throw new Error(`rsync ${flags.join(' ')}: ${r.stderr}`);
            const s = parseRsyncStats(r.stdout);
            return { ms: r.ms, wire: s.bytesSent + s.bytesReceived };
          },
        });
        const variants = [
          resync('resync push --compress --compress-choice zstd', ['--compress', '--compress-choice', 'zstd']),
          rsync('rsync -z --compress-choice=zstd', ['-z', '--compress-choice=zstd']),
          resync('resync push --compress --compress-choice deflate', ['--compress', '--compress-choice', 'deflate']),
          rsync('rsync -z --compress-choice=zlib', ['-z', '--compress-choice=zlib']),
          resync('resync push (no compression)', []),
          rsync('rsync (no compression)', []),
        ];
        const got = new Map<string, { ms: number[]; wire: number[] }>(variants.map((v) => [v.name, { ms: [], wire: [] }]));
        for (let i = 0; i < runs; i++) {
          for (const v of variants) {
            const r = await v.push();
            got.get(v.name)!.ms.push(r.ms);
            got.get(v.name)!.wire.push(r.wire);
            log(`${name} run ${i + 1}: ${v.name}: ${(r.wire / 2 ** 20).toFixed(2)} MiB, ${(r.ms / 1000).toFixed(2)} s`);
          }
        }
        // The last transfers must have rebuilt the target exactly.
        if ((await sha256File(vol)) !== pair.targetSha256 || (await sha256File(join(mod, 'vol.img'))) !== pair.targetSha256) throw new Error(`${name}: a far end does not match the target`);
        const zstdWire = median(got.get(variants[0]!.name)!.wire);
        rows.push(`| ${name} (${(pair.targetSize / 2 ** 20).toFixed(0)} MiB, block ${bs / 1024} KiB) | | | |`);
        for (const v of variants) {
          const g = got.get(v.name)!;
          const w = median(g.wire);
          rows.push(`| \`${v.name}\` | ${(w / 2 ** 20).toFixed(2)} MiB | ${(w / zstdWire).toFixed(2)} | ${(median(g.ms) / 1000).toFixed(2)} s (${(Math.min(...g.ms) / 1000).toFixed(2)}-${(Math.max(...g.ms) / 1000).toFixed(2)}) |`);
        }
      }
    } finally {
      await serve.stop();
      await rsyncd.stop();
    }
    process.stdout.write(['| transfer | bytes on the wire (median) | vs resync zstd | wall time, median (min-max) |', '|---|---:|---:|---:|', ...rows, ''].join('\n'));
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exit(1);
});
