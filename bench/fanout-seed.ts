/**
 * What the shared hash pass of a push to several replicas saves: two
 * `resync serve` processes on 127.0.0.1, each with a copy of a `scattered`
 * basis, and the target pushed to both in this process with pushToReplicas,
 * once with the shared seed (one hash pass for both) and once without (a
 * pass per replica over one shared read), alternating. Prints the medians of
 * wall time and of this process's CPU time (the primary's side only).
 *
 *   npm run build && node dist/bench/fanout-seed.js [--size 512M] [--runs 5]
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { pushToReplicas } from '../src/net/fanout.js';
import { makePair, randomBytes } from '../src/testing/workload.js';
import { capture, median, sha256File } from './measure.js';

const CLI = fileURLToPath(new URL('../../bin/resync.js', import.meta.url));

function serve(volume: string, secretFile: string): Promise<{ child: ChildProcess; port: number }> {
  const child = spawn(process.execPath, [CLI, 'serve', '--listen', '127.0.0.1:0', '--secret-file', secretFile, '--log-format', 'json', '--volume', `v=${volume}:rw`], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  return new Promise((resolve, reject) => {
    child.stderr!.on('data', (b: Buffer) => {
      err += b.toString();
      const m = /listening on 127\.0\.0\.1:(\d+)/.exec(err);
      if (m) resolve({ child, port: Number(m[1]) });
    });
    child.once('exit', () => reject(new Error(`resync serve exited: ${err}`)));
  });
}

const { values } = parseArgs({ options: { size: { type: 'string', default: '512M' }, runs: { type: 'string', default: '5' } } });
const size = Number(/^(\d+)M$/i.exec(values.size)?.[1] ?? NaN) * 1024 * 1024;
if (!Number.isSafeInteger(size) || size <= 0) throw new Error('--size takes a number of MiB, e.g. 512M');
const runs = Number(values.runs);
const dir = await mkdtemp(join(tmpdir(), 'resync-fanout-seed-'));
const servers: ChildProcess[] = [];
try {
  const { basis, target } = await makePair(dir, 'scattered', size, 1);
  const want = await sha256File(target);
  const secretFile = join(dir, 'secret');
  const secret = randomBytes(2, 24).toString('base64');
  await writeFile(secretFile, `${secret}\n`, { mode: 0o600 });
  const volumes = [join(dir, 'r1.img'), join(dir, 'r2.img')];
  const ports: number[] = [];
  for (const v of volumes) {
    const s = await serve(v, secretFile);
    servers.push(s.child);
    ports.push(s.port);
  }
  const replicas = ports.map((port) => ({ remote: `127.0.0.1:${port}/v`, opts: { host: '127.0.0.1', port, volume: 'v', secret: Buffer.from(secret) } }));
  const figures = { shared: { wall: [] as number[], cpu: [] as number[] }, separate: { wall: [] as number[], cpu: [] as number[] } };
  for (let i = 0; i < runs; i++) {
    for (const mode of i % 2 === 0 ? (['shared', 'separate'] as const) : (['separate', 'shared'] as const)) {
      for (const v of volumes) await capture('cp', ['--sparse=always', basis, v]);
      await capture('sync', []);
      const c0 = process.cpuUsage();
      const t0 = performance.now();
      const r = await pushToReplicas(target, replicas, { sharedSeed: mode === 'shared' });
      const c = process.cpuUsage(c0);
      if (!r.replicas.every((o) => o.ok)) throw new Error(`a replica failed: ${JSON.stringify(r.replicas)}`);
      for (const v of volumes) if ((await sha256File(v)) !== want) throw new Error(`${v} differs from the target`);
      figures[mode].wall.push(performance.now() - t0);
      figures[mode].cpu.push((c.user + c.system) / 1000);
      process.stderr.write(`${mode}: ${r.hashPasses} hash pass(es), wall ${Math.round(performance.now() - t0)} ms, CPU ${Math.round((c.user + c.system) / 1000)} ms\n`);
    }
  }
  for (const mode of ['shared', 'separate'] as const) {
    process.stdout.write(`${mode}: median wall ${Math.round(median(figures[mode].wall))} ms, median client CPU ${Math.round(median(figures[mode].cpu))} ms (${runs} runs)\n`);
  }
} finally {
  for (const s of servers) s.kill('SIGTERM');
  await rm(dir, { recursive: true, force: true });
}
