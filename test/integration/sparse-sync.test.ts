/**
 * A sparse image pushed to a new volume, or pulled into a new file: its
 * holes cost about 1 KiB a MiB on the wire (a zero literal goes as DEFLATE
 * whatever the compression setting) and stay holes in the target (the
 * in-place receiver extends the file over zeros past its end rather than
 * write them). Before, a 1 GiB image holding 4 MiB sent and wrote 1 GiB.
 * A pull killed part way through a hole resumes to the same bytes. Real
 * sparse files, a real server on 127.0.0.1, the CLI for the killed pull.
 */
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { cliMain } from '../../bench/killpoints.js';
import { journalPathFor } from '../../src/io/journal.js';
import { pull, push } from '../../src/net/client.js';
import { runCli } from '../helpers/cli.js';
import { writeSparse } from '../helpers/sparse-file.js';
import { closeServers, startServer, type TestServer } from '../helpers/server.js';

const MiB = 1024 * 1024;
const SIZE = 256 * MiB;
/** Data at these [offset, length): the rest of the image is holes. */
const DATA: [number, number][] = [
  [3 * MiB, MiB],
  [100 * MiB + 4096, 2 * MiB],
  [SIZE - 2 * MiB, MiB],
];
const DATA_BYTES = DATA.reduce((t, [, n]) => t + n, 0);

let dir: string;
let srv: TestServer;
let src: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'resync-sparsesync-'));
  src = join(dir, 'primary.img');
  await writeSparse(src, SIZE, DATA);
  srv = await startServer({ fresh: { path: join(dir, 'fresh.img'), writable: true }, src: { path: src, writable: false } });
});
afterAll(async () => {
  await closeServers([srv]);
  await rm(dir, { recursive: true, force: true });
});

const allocated = async (p: string): Promise<number> => (await stat(p)).blocks * 512;
const opts = (volume: string) => ({ host: '127.0.0.1', port: srv.port, secret: srv.secret, volume });

describe('a sparse image into a new target', () => {
  test('push to a new volume: holes cost little on the wire and stay holes', { timeout: 60_000 }, async () => {
    const r = await push(src, opts('fresh'));
    expect(r.literalBytes).toBe(SIZE);
    expect(r.bytesSent).toBeLessThan(DATA_BYTES + 4 * MiB);
    const vol = join(dir, 'fresh.img');
    expect((await readFile(vol)).equals(await readFile(src))).toBe(true);
    expect(await allocated(vol)).toBeLessThan(DATA_BYTES + 8 * MiB);
  });

  test('pull into a new file: the same', { timeout: 60_000 }, async () => {
    const local = join(dir, 'pulled.img');
    const r = await pull(local, opts('src'));
    expect(r.bytesReceived).toBeLessThan(DATA_BYTES + 4 * MiB);
    expect((await readFile(local)).equals(await readFile(src))).toBe(true);
    expect(await allocated(local)).toBeLessThan(DATA_BYTES + 8 * MiB);
  });

  test('a pull into a new file killed after its first batch resumes to the same bytes, still sparse', { timeout: 60_000 }, async () => {
    const local = join(dir, 'killed.img');
    const remote = `127.0.0.1:${srv.port}/src`;
    const killed = await runCli(cliMain(), ['pull', remote, local, '--secret-file', srv.secretFile], { env: { RESYNC_KILL_AT: 'inplace-written:2' } });
    expect(killed.code).toBe(-1);
    await stat(journalPathFor(local));
    const again = await runCli(cliMain(), ['pull', remote, local, '--secret-file', srv.secretFile]);
    expect(again.code, again.stderr).toBe(0);
    expect((await readFile(local)).equals(await readFile(src))).toBe(true);
    expect(await allocated(local)).toBeLessThan(DATA_BYTES + 16 * MiB);
  });
});
