/**
 * The push sender's memory stays bounded when every byte is new: its scan
 * reads synchronously and sends ops that resolve at once, and without turns
 * of the event loop V8 never freed the dead read buffers (a 1 GiB push of new
 * data peaked at 1.2 GB). A push to two replicas at once stays within the
 * same bound. Real processes on 127.0.0.1, peak RSS from the kernel.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { listeningPort } from '../helpers/listening.js';

const CLI = join(fileURLToPath(new URL('../..', import.meta.url)), 'dist/src/cli/main.js');
const RSS_HOOK =
  'data:text/javascript,' +
  encodeURIComponent('import { writeSync } from "node:fs"; process.on("exit", () => writeSync(2, `\\nPEAK_RSS ${process.resourceUsage().maxRSS * 1024}\\n`));');
const MiB = 1024 * 1024;
const SIZE = 512 * MiB;

let dir: string;
let server: ChildProcess | null = null;
const others: ChildProcess[] = [];

/** `resync serve` with one writable volume; resolves with the child and its port. */
async function serveVolume(image: string, secret: string): Promise<{ child: ChildProcess; port: number }> {
  const child = spawn(process.execPath, [CLI, 'serve', '--listen', '127.0.0.1:0', '--volume', `v=${image}:rw`, '--secret-file', secret], { stdio: ['ignore', 'pipe', 'pipe'] });
  others.push(child);
  const { port } = await listeningPort(child);
  return { child, port };
}

/** `resync push --json ARGS` with the peak RSS hook: its summary (it must exit 0) and peak RSS in bytes. */
async function pushPeak(args: string[]): Promise<{ summary: unknown; peak: number }> {
  const push = spawn(process.execPath, ['--import', RSS_HOOK, CLI, 'push', ...args, '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  push.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
  push.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  const code = await new Promise<number | null>((resolve) => push.on('close', resolve));
  expect(code, stderr).toBe(0);
  const peak = Number(/PEAK_RSS (\d+)/.exec(stderr)?.[1]);
  expect(peak).toBeGreaterThan(0);
  return { summary: JSON.parse(stdout), peak };
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'resync-pushmem-'));
});

afterAll(async () => {
  server?.kill('SIGKILL');
  for (const c of others) c.kill('SIGKILL');
  await rm(dir, { recursive: true, force: true });
});

describe('push sender memory', () => {
  test(
    'pushing 512 MiB of all-new data over a zero volume peaks under 250 MB',
    async () => {
      const basis = join(dir, 'vol.img');
      const target = join(dir, 'new.img');
      const secret = join(dir, 'secret');
      await writeFile(secret, randomBytes(32).toString('base64'), { mode: 0o600 });
      const b = await open(basis, 'w');
      await b.truncate(SIZE); // sparse zeros
      await b.close();
      const t = await open(target, 'w');
      for (let p = 0; p < SIZE; p += 8 * MiB) await t.write(randomBytes(8 * MiB), 0, 8 * MiB, p);
      await t.close();

      const served = await serveVolume(basis, secret);
      server = served.child;
      const port = served.port;

      const { summary, peak } = await pushPeak([target, `127.0.0.1:${port}/v`, '--secret-file', secret]);
      const r = summary as { literalBytes: number; verified: boolean };
      expect(r.verified).toBe(true);
      expect(r.literalBytes).toBeGreaterThan(SIZE * 0.99);
      expect(peak).toBeLessThan(250 * 1e6);
    },
    120_000,
  );

  test(
    'pushing 256 MiB of all-new data to two replicas at once peaks under the same 250 MB',
    async () => {
      const size = 256 * MiB;
      const secret = join(dir, 'secret2');
      await writeFile(secret, randomBytes(32).toString('base64'), { mode: 0o600 });
      const target = join(dir, 'new2.img');
      const t = await open(target, 'w');
      for (let p = 0; p < size; p += 8 * MiB) await t.write(randomBytes(8 * MiB), 0, 8 * MiB, p);
      await t.close();
      const ports: number[] = [];
      for (const name of ['r1.img', 'r2.img']) {
        const b = await open(join(dir, name), 'w');
        await b.truncate(size); // sparse zeros
        await b.close();
        ports.push((await serveVolume(join(dir, name), secret)).port);
      }
      const { summary, peak } = await pushPeak([target, ...ports.map((p) => `127.0.0.1:${p}/v`), '--secret-file', secret]);
      const r = summary as { hashPasses: number; replicas: { ok: boolean; literalBytes: number }[] };
      expect(r.hashPasses).toBe(1);
      for (const x of r.replicas) expect(x.ok && x.literalBytes > size * 0.99).toBe(true);
      expect(peak).toBeLessThan(250 * 1e6);
    },
    120_000,
  );
});
