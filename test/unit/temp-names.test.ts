/**
 * Which leftover temp files a new one's maker removes: those of a dead
 * resync on this host for the same output, never a live process's, another
 * host's, another output's, or one whose name does not say who made it.
 */
import { spawnSync, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { removeStaleTemps, tempPathFor } from '../../src/io/temp-names.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'resync-temps-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const HOST = hostname().replace(/[^A-Za-z0-9]/g, '_').slice(0, 32);

test('a new temp name says host and pid, beside the output', () => {
  const p = tempPathFor(join(dir, 'vm.img'));
  expect(basename(p)).toMatch(new RegExp(`^\\.vm\\.img\\.resync-${HOST}-${process.pid}-[0-9a-f]{8}\\.tmp$`));
  expect(p.startsWith(dir)).toBe(true);
});

test("only a dead maker's temp files of the same output go", async () => {
  const out = join(dir, 'vm.img');
  // A pid that ran and has exited (not reused this quickly on a quiet machine; if it were, the file would only stay).
  const dead = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' }).stdout;
  const live = spawn('sleep', ['30']);
  try {
    const names = {
      dead: `.vm.img.resync-${HOST}-${dead}-0123abcd.tmp`,
      live: `.vm.img.resync-${HOST}-${live.pid}-0123abcd.tmp`,
      self: `.vm.img.resync-${HOST}-${process.pid}-0123abcd.tmp`,
      otherHost: `.vm.img.resync-elsewhere-${dead}-0123abcd.tmp`,
      oldForm: '.vm.img.resync-0123abcd.tmp',
      otherOutput: `.vm2.img.resync-${HOST}-${dead}-0123abcd.tmp`,
    };
    for (const n of Object.values(names)) await writeFile(join(dir, n), 'x');
    expect(await removeStaleTemps(out)).toEqual([join(dir, names.dead)]);
    const left = await readdir(dir);
    expect(left).not.toContain(names.dead);
    for (const k of ['live', 'self', 'otherHost', 'oldForm', 'otherOutput'] as const) expect(left).toContain(names[k]);
  } finally {
    live.kill();
  }
});

test('a directory that cannot be read removes nothing and does not throw', async () => {
  expect(await removeStaleTemps(join(dir, 'no-such-dir', 'vm.img'))).toEqual([]);
  expect(existsSync(join(dir, 'no-such-dir'))).toBe(false);
});
