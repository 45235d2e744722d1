/**
 * The undo journal of an NBD export (io/nbd/undo.ts, io/undo-patcher.ts)
 * against qemu-nbd: what a pull or patch writes into an export is undone
 * from a journal in the state directory, also after the writing process was
 * SIGKILLed; a journal that is torn, corrupt or not the export's is never
 * applied wrongly; commands that read the export refuse it meanwhile.
 *
 * The kill tests run the built CLI (dist/).
 */
import { beforeAll, describe, expect, test } from 'vitest';
import { existsSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { copyFile, mkdir, readFile, rm, stat, symlink, truncate, writeFile, open } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import { pull } from '../../src/api/net.js';
import { openNbdImage, type NbdImage } from '../../src/io/nbd/image.js';
import { UndoPatcher } from '../../src/io/undo-patcher.js';
import { Journal, readJournal } from '../../src/io/journal.js';
import { lockNbdExport, nbdIdentity, nbdJournalMeta, nbdJournalPath, settleNbdJournal } from '../../src/io/nbd/undo.js';
import { sameExport } from '../../src/io/nbd/journal-path.js';
import { recoverNbd } from '../../src/api/files.js';
import { makeSignatureParams } from '../../src/core/signature.js';
import { imageHashBuilder } from '../../src/core/imagehash.js';
import type { TestServer } from '../helpers/server.js';
import { FaultProxy } from '../helpers/fault-proxy.js';
import { runCli } from '../helpers/cli.js';
import { hasQemu, qcow2Disk, nbdTestBed, sameContent, startNbd, type NbdExport } from '../helpers/qemu.js';

const CLI = join(fileURLToPath(new URL('../..', import.meta.url)), 'bin/resync.js');
const MiB = 1 << 20;

const bed = nbdTestBed('resync-nbdundo-', 'recovery.img');
let dir: string;
let state: string;
let srv: TestServer;
beforeAll(() => {
  ({ dir, srv } = bed);
  state = join(dir, 'state');
});

/** A qcow2 image of `size` MiB with data of its own, and a raw copy of its content. */
function localDisk(name: string, size: number): { q: string; raw: string } {
  return qcow2Disk(dir, name, size, 'write -P 0x55 0 3M', `write -P 0x66 ${size - 5}M 4M`, `write -P 0x77 ${size - 1}M 64k`);
}

/** A file standing for an NBD server's socket, and a symbolic link to it: two spellings of one socket path. */
async function socketAndLink(name: string): Promise<[string, string]> {
  const sock = join(dir, `${name}.sock`);
  await writeFile(sock, '');
  await symlink(sock, join(dir, `${name}-link.sock`));
  return [sock, join(dir, `${name}-link.sock`)];
}

/** The export's whole content (opened as a writer would, so a pending journal does not refuse it). */
async function readNbd(uri: string): Promise<Buffer> {
  const img = await openNbdImage(uri, { write: true });
  try {
    return await img.nbd.read(0, img.size);
  } finally {
    await img.nbd.close();
  }
}

/** A patcher over `img` whose undo data goes to its journal in `state`, with small batches. */
async function journaledPatcher(img: NbdImage, batch: number): Promise<{ p: UndoPatcher; path: string; spec: ReturnType<typeof makeSignatureParams> }> {
  const spec = makeSignatureParams(img.size, Buffer.alloc(16, 7), { blockSize: 4096 });
  const original = imageHashBuilder(img.size, spec);
  const all = await img.nbd.read(0, img.size);
  original.update(all);
  const path = nbdJournalPath(state, img.path);
  await rm(path, { force: true });
  await mkdir(state, { recursive: true });
  const p = await UndoPatcher.start(img.nbd, img.size, img.size, spec, null, { journal: { path, meta: nbdJournalMeta(img, img.size, spec, original.digest()) } });
  p.batchBytes = batch;
  return { p, path, spec };
}

/** An 8 MiB export patched under its journal in batches of `batch` and left unfinished (the process died); returns what is needed to settle it. */
async function crashedPatch(name: string, batch: number): Promise<{ d: { q: string; raw: string }; nbd: NbdExport; path: string }> {
  const d = localDisk(name, 8);
  const nbd = await startNbd(dir, d.q);
  const img = await openNbdImage(nbd.uri, { write: true });
  const { p, path } = await journaledPatcher(img, batch);
  await writeMost(p);
  await img.nbd.close();
  return { d, nbd, path };
}

/** Settle the export's journal over a new connection. */
async function settleAgain(uri: string, path: string): Promise<Awaited<ReturnType<typeof settleNbdJournal>>> {
  const img = await openNbdImage(uri, { write: true });
  try {
    return await settleNbdJournal(img, path);
  } finally {
    await img.nbd.close();
  }
}

/** Apply a delta that moves data and writes new data over the whole 8 MiB image, leaving the patch unfinished (a process that died). */
async function writeMost(p: UndoPatcher): Promise<void> {
  const literal = async (n: number) => {
    for (let k = 0; k < n; k++) await p.apply({ kind: 'literal', data: randomBytes(MiB) });
  };
  await p.apply({ kind: 'copy', offset: 4 * MiB, length: MiB });
  await literal(2);
  await p.apply({ kind: 'copy', offset: 0, length: MiB });
  await literal(3);
}

describe.skipIf(!hasQemu)('the journal of an NBD export', () => {
  test('round trip: the header names the export and its size; a rollback from the file alone gives back the original, proved', async () => {
    const { d, nbd, path } = await crashedPatch('rt', MiB);
    const st = (await readJournal(path))!;
    expect(st.base.export).toBe(nbdIdentity(nbd.uri));
    expect(st.base.originalSize).toBe(8 * MiB);
    expect(st.base.originalHash).toMatch(/^[0-9a-f]{64}$/);
    expect(st.undos.reduce((n, u) => n + u.length, 0)).toBe(7 * MiB);
    // A reader is refused while the journal is there.
    await expect(openNbdImage(nbd.uri, { stateDir: state })).rejects.toMatchObject({ code: 'ERR_JOURNAL', message: /unfinished update/ });
    expect(await settleAgain(nbd.uri, path)).toMatchObject({ outcome: 'rolled-back', proved: true });
    expect(existsSync(path)).toBe(false);
    await nbd.stop();
    expect(sameContent(d.q, d.raw)).toBe(true);
  }, 60_000);

  test('a torn last record (its batch never reached the export) is dropped; the records before it are undone', async () => {
    // Batches of 4 MiB: the last literals' old bytes are journaled, their writes held.
    const { d, nbd, path } = await crashedPatch('torn', 4 * MiB);
    const last = (await readJournal(path))!.undos.at(-1)!;
    await truncate(path, last.dataAt + last.length - 1000);
    expect(await settleAgain(nbd.uri, path)).toMatchObject({ outcome: 'rolled-back', proved: true });
    await nbd.stop();
    expect(sameContent(d.q, d.raw)).toBe(true);
  }, 60_000);

  test('a corrupt record ends the journal: the rollback cannot be proved, so it is refused and the journal kept', async () => {
    const { nbd, path } = await crashedPatch('corrupt', MiB);
    const at = (await readJournal(path))!.undos[0]!.dataAt + 10;
    // Flip a byte in the first record's saved data: its CRC no longer holds.
    const fh = await open(path, 'r+');
    const b = Buffer.alloc(1);
    await fh.read(b, 0, 1, at);
    b[0] = b[0]! ^ 0xff;
    await fh.write(b, 0, 1, at);
    await fh.close();
    await expect(settleAgain(nbd.uri, path)).rejects.toMatchObject({ code: 'ERR_JOURNAL', message: /does not hash to its original/ });
    expect(existsSync(path)).toBe(true);
  }, 60_000);

  test('a journal that names another export, or another size, is refused and never applied', async () => {
    const { d, nbd, path } = await crashedPatch('mine', MiB);
    const other = localDisk('other', 8);
    // The same journal where the other export's would be.
    const on = await startNbd(dir, other.q);
    const otherPath = nbdJournalPath(state, on.uri);
    await copyFile(path, otherPath);
    await expect(settleAgain(on.uri, otherPath)).rejects.toMatchObject({ code: 'ERR_JOURNAL', message: /belongs to nbd\+unix/ });
    await on.stop();
    expect(sameContent(other.q, other.raw)).toBe(true);
    expect(existsSync(otherPath)).toBe(true);
    // The right export, but a header that says it was another size.
    const wrongSize = join(dir, 'wrong-size.resync-journal');
    const j = await Journal.create(wrongSize, { id: 'x', export: nbdIdentity(nbd.uri), originalSize: 16 * MiB, targetSize: 16 * MiB });
    await j.saveUndo(0, Buffer.alloc(4096, 1));
    await j.close();
    await expect(settleAgain(nbd.uri, wrongSize)).rejects.toMatchObject({ code: 'ERR_JOURNAL', message: /of 16777216 bytes/ });
    // The real one still rolls back.
    expect(await settleAgain(nbd.uri, path)).toMatchObject({ outcome: 'rolled-back' });
    await nbd.stop();
    expect(sameContent(d.q, d.raw)).toBe(true);
  }, 60_000);

  test('a second writer is refused while one holds the export, and does not touch its journal', async () => {
    const { d, nbd, path } = await crashedPatch('locked', MiB);
    const held = await lockNbdExport(state, nbd.uri);
    try {
      await expect(pull(nbd.uri, { host: '127.0.0.1', port: srv.port, secret: srv.secret, volume: 'rec', stateDir: state })).rejects.toMatchObject({ code: 'ERR_LOCKED' });
      await expect(recoverNbd(nbd.uri, state)).rejects.toMatchObject({ code: 'ERR_LOCKED' });
      expect(existsSync(path)).toBe(true);
    } finally {
      await held.lock.release();
    }
    expect(await recoverNbd(nbd.uri, state)).toEqual({ outcome: 'rolled-back', bytes: 7 * MiB, proved: true });
    await nbd.stop();
    expect(sameContent(d.q, d.raw)).toBe(true);
  }, 60_000);

  test('the lock of an export covers its other names: a link to its socket, localhost for 127.0.0.1; not another export', async () => {
    const [sock, link] = await socketAndLink('locked');
    const held = await lockNbdExport(state, `nbd+unix:///x?socket=${sock}`);
    const tcp = await lockNbdExport(state, 'nbd://127.0.0.1:7000/x', 'read');
    try {
      await expect(lockNbdExport(state, `nbd+unix:///x?socket=${link}`, 'read')).rejects.toMatchObject({ code: 'ERR_LOCKED', message: /under this or another name/ });
      await expect(lockNbdExport(state, 'nbd://localhost:7000/x')).rejects.toMatchObject({ code: 'ERR_LOCKED' });
      // Readers share; another export name, port or socket is another lock.
      await (await lockNbdExport(state, 'nbd://localhost:7000/x', 'read')).lock.release();
      for (const u of [`nbd+unix:///y?socket=${sock}`, 'nbd://127.0.0.1:7001/x', 'nbd://127.0.0.2:7000/x']) await (await lockNbdExport(state, u)).lock.release();
    } finally {
      await held.lock.release();
      await tcp.lock.release();
    }
    // Released: the other names are free.
    await (await lockNbdExport(state, `nbd+unix:///x?socket=${link}`)).lock.release();
    await (await lockNbdExport(state, 'nbd://localhost:7000/x')).lock.release();
  });

  test('identity: two spellings of one export share a journal; other hosts, ports, sockets and names do not', () => {
    expect(nbdIdentity('nbd://Host.Example/vm1')).toBe('nbd://host.example:10809/vm1');
    expect(nbdJournalPath('/s', 'nbd://HOST.example:10809/vm1')).toBe(nbdJournalPath('/s', 'nbd://host.example/vm1'));
    const paths = ['nbd://host/vm1', 'nbd://host:7451/vm1', 'nbd://host/vm2', 'nbd://other/vm1', 'nbd+unix:///vm1?socket=/run/a.sock', 'nbd+unix:///vm1?socket=/run/b.sock'].map((u) => nbdJournalPath('/s', u));
    expect(new Set(paths).size).toBe(paths.length);
    expect(nbdIdentity('nbd+unix:///vm1?socket=rel.sock')).toBe(`nbd+unix:///vm1?socket=${encodeURIComponent(join(process.cwd(), 'rel.sock'))}`);
  });
});

describe.skipIf(!hasQemu)('a pull into an NBD export killed mid-write', () => {
  const SIZE = 24;
  let volume: Buffer;

  beforeAll(async () => {
    volume = randomBytes(SIZE * MiB);
    await writeFile(join(dir, 'recovery.img'), volume);
    await writeFile(join(dir, 'recovery-copy.raw'), volume);
  });

  const env = () => ({ XDG_STATE_HOME: join(dir, 'cli-state') });
  const pullArgs = (uri: string) => ['pull', '--json', '--secret-file', srv.secretFile, `127.0.0.1:${srv.port}/rec`, uri];

  /** Start a pull of the volume into a fresh export and SIGKILL it once its first batch reached the export. */
  async function killedPull(name: string, tcp = false): Promise<{ d: { q: string; raw: string }; nbd: NbdExport; journal: string }> {
    const d = localDisk(name, SIZE);
    const nbd = await startNbd(dir, d.q, { tcp });
    const r = await runCli(CLI, pullArgs(nbd.uri), { env: { ...env(), RESYNC_KILL_AT: 'nbd-batch-written' } });
    expect(r.code, r.stderr).toBe(-1);
    const journal = nbdJournalPath(join(dir, 'cli-state', 'resync'), nbd.uri);
    expect(existsSync(journal)).toBe(true);
    return { d, nbd, journal };
  }

  test('the export is refused as a source; the same pull again rolls back, completes, and the export equals the volume', async () => {
    expect(existsSync(CLI)).toBe(true);
    const { d, nbd, journal } = await killedPull('killed');
    // At least the first batch (2 MiB) of old bytes.
    expect((await stat(journal)).size).toBeGreaterThan(2 * MiB);
    // Part-updated: neither the original nor the volume.
    const img = await openNbdImage(nbd.uri, { write: true });
    const now = await img.nbd.read(0, img.size);
    await img.nbd.close();
    expect(now.equals(await readFile(d.raw))).toBe(false);
    expect(now.equals(volume)).toBe(false);
    // (a) Readers refuse it, with the command that fixes it.
    const push = await runCli(CLI, ['push', '--json', '--secret-file', srv.secretFile, nbd.uri, `127.0.0.1:${srv.port}/rec`], { env: env() });
    expect(push.code, push.stderr).toBe(9);
    expect(JSON.parse(push.stdout)).toMatchObject({ ok: false, code: 'ERR_JOURNAL', message: expect.stringMatching(/unfinished update.*run that pull or patch again, or 'resync recover nbd\+unix/) });
    // --state-dir finds the journal with --no-digest-cache too.
    const elsewhere = { XDG_STATE_HOME: join(dir, 'elsewhere') };
    const pushArgs = ['push', '--json', '--no-digest-cache', '--secret-file', srv.secretFile, nbd.uri, `127.0.0.1:${srv.port}/rec`];
    expect((await runCli(CLI, [...pushArgs, '--state-dir', join(dir, 'cli-state', 'resync')], { env: elsewhere })).code).toBe(9);
    // So do the reading commands, each given the state directory instead of finding it in the environment.
    const stateDir = ['--state-dir', join(dir, 'cli-state', 'resync')];
    const copySig = join(dir, 'copy.sig');
    expect((await runCli(CLI, ['signature', '--force', join(dir, 'recovery-copy.raw'), copySig])).code).toBe(0);
    for (const args of [
      ['verify', '--json', nbd.uri, join(dir, 'recovery-copy.raw')],
      ['signature', '--json', '--force', nbd.uri, join(dir, 'killed.sig')],
      ['delta', '--json', '--force', copySig, nbd.uri, join(dir, 'killed.delta')],
      ['delta', '--json', '--dry-run', copySig, nbd.uri, '-'],
      [...pushArgs.slice(0, 2), '--dry-run', ...pushArgs.slice(2)],
    ]) {
      const r = await runCli(CLI, [...args, ...stateDir], { env: elsewhere });
      expect(r.code, `${args[0]}: ${r.stderr}`).toBe(9);
      expect(JSON.parse(r.stdout)).toMatchObject({ ok: false, code: 'ERR_JOURNAL' });
    }
    expect(existsSync(join(dir, 'killed.delta'))).toBe(false);
    const verify = await runCli(CLI, ['verify', nbd.uri, join(dir, 'recovery-copy.raw')], { env: env() });
    expect(verify.code).toBe(9);
    const sig = await runCli(CLI, ['signature', '--force', nbd.uri, join(dir, 'killed.sig')], { env: env() });
    expect(sig.code).toBe(9);
    // The volume was not touched by the refused push.
    expect((await readFile(join(dir, 'recovery.img'))).equals(volume)).toBe(true);
    // (b) The same pull again: rolled back first, then done.
    const again = await runCli(CLI, pullArgs(nbd.uri), { env: env(), timeoutMs: 60_000 });
    expect(again.code, again.stderr).toBe(0);
    expect(JSON.parse(again.stdout)).toMatchObject({ ok: true, verified: true, recovered: 'rolled-back' });
    expect(again.stderr).toMatch(/note: rolled back the unfinished update of nbd\+unix/);
    expect(existsSync(journal)).toBe(false);
    await nbd.stop();
    expect(sameContent(d.q, join(dir, 'recovery-copy.raw'))).toBe(true);
  }, 120_000);

  test('another spelling of the same export (localhost for 127.0.0.1, a link to the socket) finds its journal: refused, never read or written', async () => {
    const { d, nbd, journal } = await killedPull('spelling', true);
    const other = nbd.uri.replace('//127.0.0.1:', '//localhost:');
    expect(other).not.toBe(nbd.uri);
    // Its own journal file is another one, which does not exist.
    expect(nbdJournalPath(join(dir, 'cli-state', 'resync'), other)).not.toBe(journal);
    const partial = await readNbd(nbd.uri);
    for (const args of [
      ['signature', '--json', '--force', other, join(dir, 'spelling.sig')],
      ['push', '--json', '--secret-file', srv.secretFile, other, `127.0.0.1:${srv.port}/rec`],
      pullArgs(other),
      ['recover', '--json', other],
    ]) {
      const r = await runCli(CLI, args, { env: env(), timeoutMs: 60_000 });
      expect(r.code, `${args[0]}: ${r.stderr}`).toBe(9);
      expect(JSON.parse(r.stdout)).toMatchObject({ ok: false, code: 'ERR_JOURNAL', message: expect.stringContaining(`nbd://127.0.0.1:`) });
    }
    // Nothing was written or rolled back under the other name; the journal is still there.
    expect((await readNbd(nbd.uri)).equals(partial)).toBe(true);
    expect(existsSync(journal)).toBe(true);
    // The name it was made under settles it.
    const rec = await runCli(CLI, ['recover', '--json', nbd.uri], { env: env(), timeoutMs: 60_000 });
    expect(rec.code, rec.stderr).toBe(0);
    expect(existsSync(journal)).toBe(false);
    await nbd.stop();
    expect(sameContent(d.q, d.raw)).toBe(true);
  }, 120_000);

  test('sameExport: one socket through a symbolic link, one port on one address; other names, ports and sockets differ', async () => {
    const [sock, link] = await socketAndLink('same');
    expect(await sameExport(`nbd+unix:///x?socket=${sock}`, `nbd+unix:///x?socket=${link}`)).toBe(true);
    expect(await sameExport(`nbd+unix:///x?socket=${sock}`, `nbd+unix:///y?socket=${sock}`)).toBe(false);
    expect(await sameExport(`nbd+unix:///x?socket=${sock}`, `nbd+unix:///x?socket=${join(dir, 'other.sock')}`)).toBe(false);
    expect(await sameExport('nbd://localhost:7000/x', 'nbd://127.0.0.1:7000/x')).toBe(true);
    expect(await sameExport('nbd://localhost:7000/x', 'nbd://127.0.0.1:7001/x')).toBe(false);
    expect(await sameExport('nbd://127.0.0.2:7000/x', 'nbd://127.0.0.1:7000/x')).toBe(false);
    expect(await sameExport(`nbd://127.0.0.1:7000/x`, `nbd+unix:///x?socket=${sock}`)).toBe(false);
  });

  test('recover rolls the export back to exactly its original content, also after being killed itself mid-rollback', async () => {
    const { d, nbd, journal } = await killedPull('recover');
    // Killed after writing the old bytes back, before the flush and the journal's deletion.
    const killed = await runCli(CLI, ['recover', '--json', nbd.uri], { env: { ...env(), RESYNC_KILL_AT: 'nbd-rollback-written' } });
    expect(killed.code, killed.stderr).toBe(-1);
    expect(existsSync(journal)).toBe(true);
    const r = await runCli(CLI, ['recover', '--json', nbd.uri], { env: env() });
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ ok: true, outcome: 'rolled-back', verified: true });
    expect(existsSync(journal)).toBe(false);
    const nothing = await runCli(CLI, ['recover', '--json', nbd.uri], { env: env() });
    expect(JSON.parse(nothing.stdout)).toMatchObject({ ok: true, outcome: 'nothing' });
    await nbd.stop();
    expect(sameContent(d.q, d.raw)).toBe(true);
  }, 120_000);

  test('a kill after the export was flushed, before the commit record: the next pull rolls back and pulls again', async () => {
    const d = localDisk('flushed', SIZE);
    const nbd = await startNbd(dir, d.q);
    const env2 = { ...env(), RESYNC_KILL_AT: 'nbd-flushed' };
    expect((await runCli(CLI, pullArgs(nbd.uri), { env: env2 })).code).toBe(-1);
    // Not committed yet: the next pull rolls back and pulls again.
    const again = await runCli(CLI, pullArgs(nbd.uri), { env: env(), timeoutMs: 60_000 });
    expect(again.code, again.stderr).toBe(0);
    expect(JSON.parse(again.stdout)).toMatchObject({ ok: true, recovered: 'rolled-back' });
    await nbd.stop();
    expect(sameContent(d.q, join(dir, 'recovery-copy.raw'))).toBe(true);
  }, 120_000);

  test('patch --in-place into an export, killed mid-write: the same patch again rolls back first and completes', async () => {
    const d = localDisk('patched', SIZE);
    const nbd = await startNbd(dir, d.q);
    const sig = join(dir, 'patched.sig');
    const delta = join(dir, 'patched.delta');
    expect((await runCli(CLI, ['signature', '--force', nbd.uri, sig], { env: env() })).code).toBe(0);
    expect((await runCli(CLI, ['delta', '--force', sig, join(dir, 'recovery-copy.raw'), delta], { env: env() })).code).toBe(0);
    const args = ['patch', '--json', '--in-place', nbd.uri, delta];
    expect((await runCli(CLI, args, { env: { ...env(), RESYNC_KILL_AT: 'nbd-batch-written' } })).code).toBe(-1);
    const journal = nbdJournalPath(join(dir, 'cli-state', 'resync'), nbd.uri);
    expect(existsSync(journal)).toBe(true);
    const again = await runCli(CLI, args, { env: env(), timeoutMs: 60_000 });
    expect(again.code, again.stderr).toBe(0);
    expect(JSON.parse(again.stdout)).toMatchObject({ ok: true, verified: true, recovered: 'rolled-back' });
    expect(again.stderr).toMatch(/resync patch: note: rolled back/);
    expect(existsSync(journal)).toBe(false);
    await nbd.stop();
    expect(sameContent(d.q, join(dir, 'recovery-copy.raw'))).toBe(true);
  }, 120_000);

  test('SIGTERM mid-write: exit 143; the pull puts the export back as it was before it exits (it does not resume), and the same pull again completes', async () => {
    const d = localDisk('sigterm', SIZE);
    const nbd = await startNbd(dir, d.q);
    const journal = nbdJournalPath(join(dir, 'cli-state', 'resync'), nbd.uri);
    // Slowed to 2 MiB/s, so the signal comes while the delta is being written.
    const child = spawn(process.execPath, [CLI, ...pullArgs(nbd.uri), '--bwlimit', '2M'], { env: { ...process.env, ...env() } });
    let stdout = '';
    child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
    const done = new Promise<number | null>((res) => child.on('close', (code) => res(code)));
    for (let i = 0; i < 400 && !existsSync(journal); i++) await new Promise((res) => setTimeout(res, 50));
    expect(existsSync(journal)).toBe(true);
    child.kill('SIGTERM');
    expect(await done).toBe(143);
    // Asked to stop, the pull undoes what it wrote (an export's pull starts over, so nothing is kept).
    expect(JSON.parse(stdout)).toMatchObject({ ok: false, code: 'ERR_INTERRUPTED', signal: 'SIGTERM', state: 'unchanged' });
    expect(JSON.parse(stdout).message).toMatch(/was not changed \(what the pull wrote, if anything, was put back\)/);
    expect(JSON.parse(stdout).resume).not.toMatch(/to resume it/);
    expect(existsSync(journal)).toBe(false);
    expect((await readNbd(nbd.uri)).equals(await readFile(d.raw))).toBe(true);
    const again = await runCli(CLI, pullArgs(nbd.uri), { env: env(), timeoutMs: 60_000 });
    expect(again.code, again.stderr).toBe(0);
    expect(JSON.parse(again.stdout)).toMatchObject({ ok: true, verified: true });
    expect(existsSync(journal)).toBe(false);
    await nbd.stop();
    expect(sameContent(d.q, join(dir, 'recovery-copy.raw'))).toBe(true);
  }, 120_000);

  test('two writers under two names for one export (127.0.0.1, localhost): the second is refused while the first runs, also before it has a journal; killed, the first leaves its journal to its own name', async () => {
    const d = localDisk('twonames', SIZE);
    // More than one client at a time (qemu-nbd serves one unless told otherwise), as qemu-storage-daemon does.
    const nbd = await startNbd(dir, d.q, { tcp: true, shared: 4 });
    const other = nbd.uri.replace('//127.0.0.1:', '//localhost:');
    const cliState = join(dir, 'cli-state', 'resync');
    const journal = nbdJournalPath(cliState, nbd.uri);
    const refused = async (): Promise<void> => {
      const r = await runCli(CLI, pullArgs(other), { env: env(), timeoutMs: 60_000 });
      expect(r.code, r.stderr).toBe(11);
      expect(JSON.parse(r.stdout)).toMatchObject({ ok: false, code: 'ERR_LOCKED', message: expect.stringContaining('under this or another name for it') });
    };
    // A writer that holds the export but has written nothing yet: no journal under either name.
    const held = await lockNbdExport(cliState, nbd.uri);
    try {
      await refused();
      await expect(lockNbdExport(cliState, other, 'read')).rejects.toMatchObject({ code: 'ERR_LOCKED' });
      expect(existsSync(journal) || existsSync(nbdJournalPath(cliState, other))).toBe(false);
    } finally {
      await held.lock.release();
    }
    // A running pull (slowed to 2 MiB/s) under the first name.
    const child = spawn(process.execPath, [CLI, ...pullArgs(nbd.uri), '--bwlimit', '2M'], { env: { ...process.env, ...env() } });
    const done = new Promise<number | null>((res) => child.on('close', (code) => res(code)));
    for (let i = 0; i < 400 && !existsSync(journal); i++) await new Promise((res) => setTimeout(res, 50));
    expect(existsSync(journal)).toBe(true);
    await refused();
    // Its locks die with it; its journal stays, for its own name to settle.
    child.kill('SIGKILL');
    await done;
    const after = await runCli(CLI, pullArgs(other), { env: env(), timeoutMs: 60_000 });
    expect(after.code, after.stderr).toBe(9);
    expect(JSON.parse(after.stdout)).toMatchObject({ ok: false, code: 'ERR_JOURNAL', message: expect.stringContaining(nbd.uri) });
    const again = await runCli(CLI, pullArgs(nbd.uri), { env: env(), timeoutMs: 60_000 });
    expect(again.code, again.stderr).toBe(0);
    expect(JSON.parse(again.stdout)).toMatchObject({ ok: true, verified: true, recovered: 'rolled-back' });
    await nbd.stop();
    expect(sameContent(d.q, join(dir, 'recovery-copy.raw'))).toBe(true);
  }, 120_000);

  test('a dropped connection mid-delta puts the export back as it was and leaves no journal', async () => {
    const d = localDisk('dropped', SIZE);
    const nbd = await startNbd(dir, d.q);
    // The delta comes down: cut it after more than two batches' worth has passed.
    const proxy = await FaultProxy.start(srv.port, { down: { cutAfter: 20 * MiB } });
    try {
      await expect(pull(nbd.uri, { host: '127.0.0.1', port: proxy.port, secret: srv.secret, volume: 'rec', stateDir: state })).rejects.toMatchObject({ code: 'ERR_CONNECTION' });
    } finally {
      await proxy.close();
    }
    expect(proxy.count('cut')).toBe(1);
    expect(existsSync(nbdJournalPath(state, nbd.uri))).toBe(false);
    await nbd.stop();
    expect(sameContent(d.q, d.raw)).toBe(true);
  }, 120_000);
});
