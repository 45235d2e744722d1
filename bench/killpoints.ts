/**
 * Kill-point test: SIGKILL the receiver of an in-place update at random
 * moments, recover, and check that the image is never silently wrong.
 *
 * Modes (each trial picks a scenario and kills 1..maxKills times in a row):
 *
 *   patch         `resync patch B D --in-place`, killed; then `--resume` runs,
 *                 killed again...; a last `--resume` must leave B equal to the
 *                 new image.
 *   recover       the same kills, then `resync recover B` must give back the
 *                 original basis (or the new image if the patch had committed).
 *   push          a `resync serve` child receives a push and is killed;
 *                 restarted, the push is re-run (and the server killed
 *                 again...); the last push must leave the volume equal to the
 *                 source.
 *   push-recover  one killed push, then `resync recover VOLUME`.
 *   pull          `resync pull` (in place) is killed and re-run.
 *
 * After every kill the image is classified: a journal is present (the
 * patch is resumable), or there is no journal and the image must be exactly
 * the original or exactly the new image. Anything else, and any final image
 * that differs from what the command reported, is silent corruption.
 *
 * Network faults (`--faults N`): push or pull in-process through the fault
 * proxy (test/helpers/fault-proxy.ts), cut at a random byte count in a random
 * direction (or black-holed past the idle timeout), then retried without the
 * fault; the retry must verify and the image must equal the source.
 *
 *   node dist/bench/killpoints.js --n 60 [--faults 30] [--size 128] [--push-size 32]
 *                                 [--seed 1] [--modes patch,recover,push,push-recover,pull]
 *                                 [--dir DIR] [--keep] [--json]
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, existsSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { makePair, type Scenario } from '../src/testing/workload.js';
import { deltaFile, signatureFile } from '../src/api/files.js';
import { journalPathFor, readJournal } from '../src/io/journal.js';
import { pull, push } from '../src/net/client.js';
import { ResyncServer } from '../src/net/server.js';
import { FaultProxy, type Direction } from '../test/helpers/fault-proxy.js';

/** How the receiver is exercised. */
export type Mode = 'patch' | 'recover' | 'push' | 'push-recover' | 'pull';
/** Every mode, in the order trials cycle through them. */
export const MODES: readonly Mode[] = ['patch', 'recover', 'push', 'push-recover', 'pull'];

/** What the image looked like right after a kill. */
export type Landing = 'untouched' | 'journal' | 'complete' | 'settled';

/** The image when an attempt began. */
type Start = { kind: 'hash'; sha: string } | { kind: 'journal' } | { kind: 'unknown' };

/** Options of a kill-point run. */
export interface KillPointOptions {
  /** Stop once this many kills have hit a running receiver. */
  killPoints: number;
  /** Network faults to inject (0: none). */
  faults: number;
  /** Image size for file patches, MiB. */
  sizeMiB: number;
  /** Image size for push and pull and the network faults, MiB. */
  pushSizeMiB: number;
  seed: number;
  scenarios: readonly Scenario[];
  modes: readonly Mode[];
  /** Most kills in one trial before it is allowed to finish. */
  maxKillsPerTrial: number;
  /** Work directory (created if missing); a temp dir when absent. */
  dir?: string | undefined;
  /** Keep the work directory. */
  keep?: boolean | undefined;
  log?: ((line: string) => void) | undefined;
}

/** The figures of a run. */
export interface KillPointReport {
  seed: number;
  sizeMiB: number;
  pushSizeMiB: number;
  scenarios: readonly Scenario[];
  /** Kills delivered while the receiver was still running. */
  killPoints: number;
  /** Kills that came after the receiver had already finished (not counted above). */
  killsTooLate: number;
  trials: number;
  byMode: Record<Mode, { trials: number; killPoints: number }>;
  /** State found after each counted kill. */
  landed: Record<Landing, number>;
  /** Kills that left a journal file without a readable header (resume and recover refuse it). */
  tornJournal: number;
  /** Kills that found undo records in the journal (the image was mid-write), and a checkpoint past 0. */
  landedAfterWrites: number;
  landedAfterCheckpoint: number;
  /** Error codes the interrupted client saw when its server was killed. */
  clientCodes: Record<string, number>;
  /** Final resumes (patch --resume, re-push, re-pull) that verified. */
  resumed: number;
  /** Recovers that gave back the original image. */
  rolledBack: number;
  /** Trials whose last run found the work already complete. */
  alreadyComplete: number;
  /** What `patch --resume` said of an image that was already complete: "nothing to resume" (or an error code). */
  refusedWhenComplete: Record<string, number>;
  /** Network faults injected, by kind, and what the faulted client saw. */
  faultsInjected: number;
  faultKinds: Record<string, number>;
  faultCodes: Record<string, number>;
  /** Retries after a network fault that resumed past 0. */
  faultRetriesResumed: number;
  /** Literal bytes the retries after a cut sent, against a full send of the same pairs. */
  faultRetryBytes: number;
  faultFullBytes: number;
  /** Everything that went wrong; silent corruption is also counted separately. */
  failures: string[];
  silentCorruption: number;
  elapsedMs: number;
}

const MiB = 1024 * 1024;
const LOCAL = '127.0.0.1';
const RUN_LIMIT_MS = 180_000;

/** The repository root (this file runs from bench/ as TypeScript or from dist/bench/ as JavaScript). */
function repoRoot(): string {
  let d = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 4; i++) {
    if (existsSync(join(d, 'package.json'))) return d;
    d = dirname(d);
  }
  throw new Error('cannot find the repository root from ' + import.meta.url);
}

/** The built CLI the children run. */
export function cliMain(): string {
  return join(repoRoot(), 'dist', 'src', 'cli', 'main.js');
}

/** Small seeded PRNG (mulberry32): the same seed gives the same kill schedule. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** SHA-256 of a file, streamed. */
export async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const c of createReadStream(path, { highWaterMark: 4 * MiB })) h.update(c as Buffer);
  return h.digest('hex');
}

/** What a CLI child did. */
interface CliRun {
  code: number | null;
  /** True when our SIGKILL ended it (it had not exited by itself). */
  killed: boolean;
  json: Record<string, unknown> | null;
  stderr: string;
  ms: number;
}

const children = new Set<ChildProcess>();

/** SIGKILL every child still running (used when the run stops early). */
export function killChildren(): void {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  children.clear();
}

/** Run the CLI with `--json`; SIGKILL it after `killAfterMs` if it is still running. */
function runCli(args: string[], killAfterMs?: number): Promise<CliRun> {
  return new Promise((res, rej) => {
    const t0 = performance.now();
    const c = spawn(process.execPath, [cliMain(), ...args, '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
    children.add(c);
    let out = '';
    let err = '';
    let killed = false;
    c.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    c.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    const killer = killAfterMs !== undefined ? setTimeout(() => (killed = c.kill('SIGKILL')), killAfterMs) : null;
    const limit = setTimeout(() => c.kill('SIGKILL'), RUN_LIMIT_MS);
    c.once('error', rej);
    c.once('close', (code, signal) => {
      children.delete(c);
      if (killer) clearTimeout(killer);
      clearTimeout(limit);
      let json: Record<string, unknown> | null = null;
      try {
        const line = out.trim().split('\n').pop();
        json = line ? (JSON.parse(line) as Record<string, unknown>) : null;
      } catch {
        json = null;
      }
      res({ code, killed: killed && signal === 'SIGKILL', json, stderr: err, ms: performance.now() - t0 });
    });
  });
}

/** A `resync serve` child. */
interface ServeChild {
  port: number;
  proc: ChildProcess;
  exited: Promise<void>;
}

/** Start `resync serve` on 127.0.0.1 (ephemeral port) with the given volumes. */
async function startServe(volumes: Record<string, string>, secretFile: string): Promise<ServeChild> {
  const args = [cliMain(), 'serve', '--listen', `${LOCAL}:0`, '--secret-file', secretFile, '-q'];
  for (const [name, spec] of Object.entries(volumes)) args.push('--volume', `${name}=${spec}`);
  const proc = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  children.add(proc);
  const exited = new Promise<void>((r) => proc.once('close', () => r()));
  void exited.then(() => children.delete(proc));
  const port = await new Promise<number>((res, rej) => {
    let text = '';
    const t = setTimeout(() => rej(new Error(`resync serve did not start:\n${text}`)), 20_000);
    proc.stderr!.on('data', (d: Buffer) => {
      text += d.toString();
      const m = /listening on [^\s]+:(\d+)/.exec(text);
      if (m) {
        clearTimeout(t);
        res(Number(m[1]));
      }
    });
    proc.once('close', (code) => {
      clearTimeout(t);
      rej(new Error(`resync serve exited with ${code}:\n${text}`));
    });
  });
  return { port, proc, exited };
}

async function stopServe(s: ServeChild): Promise<void> {
  if (s.proc.exitCode === null && s.proc.signalCode === null) s.proc.kill('SIGKILL');
  await s.exited;
}

/**
 * When a run writes: from the moment its journal appears (before the first
 * write) to its exit. Measured on an uninterrupted run.
 */
interface Window {
  start: number;
  end: number;
}

/**
 * A kill delay: a quarter spread over the whole run (start-up, checks, the
 * signature...), three quarters over the part where the image is being
 * written, where a kill can tear something.
 */
function killDelay(rnd: () => number, w: Window): number {
  return rnd() < 1 / 4 ? rnd() * w.end : w.start + rnd() * (w.end - w.start);
}

/**
 * A run that finished before its kill shows the window is too long (the
 * machine got faster than at calibration): move the end halfway to it.
 */
function shrinkWindow(w: Window, finishedMs: number): void {
  if (finishedMs >= w.end) return;
  w.end = (w.end + finishedMs) / 2;
  w.start = Math.min(w.start, w.end * 0.9);
}

/** Time `run`, noting when `journal` first exists. */
async function timeWindow(run: () => Promise<CliRun>, journal: string): Promise<{ run: CliRun; window: Window }> {
  const t0 = performance.now();
  let seen = -1;
  let done = false;
  const watch = (async () => {
    while (!done && seen < 0) {
      if (existsSync(journal)) seen = performance.now() - t0;
      else await new Promise((r) => setTimeout(r, 2));
    }
  })();
  const c = await run();
  done = true;
  await watch;
  const end = performance.now() - t0;
  return { run: c, window: { start: seen >= 0 ? seen : 0, end } };
}

/** One scenario's files. */
interface Pair {
  scenario: Scenario;
  basis: string;
  target: string;
  delta: string;
  basisSha: string;
  targetSha: string;
}

async function preparePair(dir: string, scenario: Scenario, sizeMiB: number, seed: number, withDelta: boolean): Promise<Pair> {
  await mkdir(dir, { recursive: true });
  const { basis, target } = await makePair(dir, scenario, sizeMiB * MiB, seed);
  const delta = join(dir, 'delta');
  if (withDelta) {
    await signatureFile(basis, join(dir, 'sig'));
    await deltaFile(join(dir, 'sig'), target, delta);
  }
  return { scenario, basis, target, delta, basisSha: await sha256File(basis), targetSha: await sha256File(target) };
}

function bump(m: Record<string, number>, k: string): void {
  m[k] = (m[k] ?? 0) + 1;
}

/** Run the kill points (and network faults) and return the figures. */
export async function runKillPoints(o: KillPointOptions): Promise<KillPointReport> {
  const t0 = performance.now();
  const log = o.log ?? (() => undefined);
  if (!existsSync(cliMain())) throw new Error(`${cliMain()} is missing: build first (npx tsc -p tsconfig.json)`);
  const rnd = prng(o.seed);
  const root = o.dir ? resolve(o.dir) : await mkdtemp(join(tmpdir(), 'resync-killpoints-'));
  await mkdir(root, { recursive: true });
  const r: KillPointReport = {
    seed: o.seed,
    sizeMiB: o.sizeMiB,
    pushSizeMiB: o.pushSizeMiB,
    scenarios: o.scenarios,
    killPoints: 0,
    killsTooLate: 0,
    trials: 0,
    byMode: Object.fromEntries(MODES.map((m) => [m, { trials: 0, killPoints: 0 }])) as KillPointReport['byMode'],
    landed: { untouched: 0, journal: 0, complete: 0, settled: 0 },
    tornJournal: 0,
    landedAfterWrites: 0,
    landedAfterCheckpoint: 0,
    clientCodes: {},
    resumed: 0,
    rolledBack: 0,
    alreadyComplete: 0,
    refusedWhenComplete: {},
    faultsInjected: 0,
    faultKinds: {},
    faultCodes: {},
    faultRetriesResumed: 0,
    faultRetryBytes: 0,
    faultFullBytes: 0,
    failures: [],
    silentCorruption: 0,
    elapsedMs: 0,
  };
  const fail = (what: string, silent = false): void => {
    r.failures.push(what);
    if (silent) r.silentCorruption++;
    log(`FAIL ${what}`);
  };
  const secretFile = join(root, 'secret');
  await writeFile(secretFile, createHash('sha256').update(`killpoints-${o.seed}`).digest('base64') + '\n', { mode: 0o600 });

  try {
    const needFile = o.modes.includes('patch') || o.modes.includes('recover');
    const needNet = o.modes.some((m) => m === 'push' || m === 'push-recover' || m === 'pull') || o.faults > 0;
    const filePairs: Pair[] = [];
    const netPairs: Pair[] = [];
    for (const sc of o.scenarios) {
      if (needFile) filePairs.push(await preparePair(join(root, `file-${sc}`), sc, o.sizeMiB, o.seed, true));
      if (needNet) netPairs.push(await preparePair(join(root, `net-${sc}`), sc, o.pushSizeMiB, o.seed, false));
    }
    log(`prepared ${filePairs.length + netPairs.length} image pairs in ${root}`);

    // Calibration: one uninterrupted run per mode and scenario gives the window kills are spread over.
    const spanPatch = new Map<Scenario, Window>();
    const spanPush = new Map<Scenario, Window>();
    const spanPull = new Map<Scenario, Window>();
    const work = join(root, 'work.img');
    const fmt = (w: Window): string => `${w.end.toFixed(0)} ms, writing from ${w.start.toFixed(0)} ms`;
    for (const p of filePairs) {
      await copyFile(p.basis, work);
      const { run: c, window } = await timeWindow(() => runCli(['patch', work, p.delta, '--in-place']), journalPathFor(work));
      if (c.code !== 0 || (await sha256File(work)) !== p.targetSha) fail(`calibration patch (${p.scenario}) failed: ${c.stderr.trim()}`, c.code === 0);
      spanPatch.set(p.scenario, window);
      log(`calibrate patch ${p.scenario}: ${fmt(window)}`);
    }
    for (const p of netPairs) {
      if (!o.modes.some((m) => m.startsWith('push') || m === 'pull')) break;
      await copyFile(p.basis, work);
      const s = await startServe({ v: `${work}:rw`, src: `${p.target}:ro` }, secretFile);
      if (o.modes.includes('push') || o.modes.includes('push-recover')) {
        const { run: c, window: w } = await timeWindow(() => runCli(['push', p.target, `${LOCAL}:${s.port}/v`, '--secret-file', secretFile]), journalPathFor(work));
        if (c.code !== 0 || (await sha256File(work)) !== p.targetSha) fail(`calibration push (${p.scenario}) failed: ${c.stderr.trim()}`, c.code === 0);
        spanPush.set(p.scenario, w);
        log(`calibrate push ${p.scenario}: ${fmt(w)}`);
      }
      if (o.modes.includes('pull')) {
        const local = join(root, 'local.img');
        await copyFile(p.basis, local);
        const { run: q, window: w } = await timeWindow(() => runCli(['pull', `${LOCAL}:${s.port}/src`, local, '--secret-file', secretFile]), journalPathFor(local));
        if (q.code !== 0 || (await sha256File(local)) !== p.targetSha) fail(`calibration pull (${p.scenario}) failed: ${q.stderr.trim()}`, q.code === 0);
        spanPull.set(p.scenario, w);
        log(`calibrate pull ${p.scenario}: ${fmt(w)}`);
      }
      await stopServe(s);
    }

    /**
     * Classify the image after a kill. `start` says what the image was when the
     * attempt began: a known hash (there was no journal), 'journal' (the attempt
     * resumed a journal, so without one now it must have finished), or
     * 'unknown' (a server first settled an earlier journal: without a journal
     * now, the image must be the original or the new one all the same).
     */
    const afterKill = async (img: string, p: Pair, start: Start, what: string): Promise<Landing | null> => {
      const jpath = journalPathFor(img);
      if (existsSync(jpath)) {
        let st;
        try {
          st = await readJournal(jpath);
        } catch (e) {
          // Killed while the journal was being created: the file exists but holds no header.
          r.tornJournal++;
          fail(`${what}: the journal was left without a readable header (${(e as Error).message}); resume and recover refuse it`);
          // No image write can precede a complete header; confirm that, then clear the journal by hand.
          if (start.kind === 'hash' && (await sha256File(img)) !== start.sha) fail(`${what}: the image changed though the journal has no header`, true);
          await rm(jpath, { force: true });
          r.landed.untouched++;
          return 'untouched';
        }
        if (st) {
          if (st.undos.length > 0) r.landedAfterWrites++;
          if (st.checkpoint > 0) r.landedAfterCheckpoint++;
          r.landed.journal++;
          log(`${what}: journal with ${st.undos.length} undo record(s), checkpoint ${st.checkpoint}`);
          return 'journal';
        }
        // Killed while the journal was being created; reading it found no header
        // and discarded it (nothing can have been written): classify the image.
        r.tornJournal++;
      }
      const h = await sha256File(img);
      if (h === p.targetSha) {
        r.landed.complete++;
        log(`${what}: no journal, the image is complete`);
        return 'complete';
      }
      if (start.kind === 'hash' && h === start.sha) {
        r.landed.untouched++;
        log(`${what}: no journal, the image untouched`);
        return 'untouched';
      }
      // A session that settles an earlier journal keeps it (a new generation)
      // unless the image is provably the original or the new one: a mixed
      // image without a journal is corruption, whatever came before.
      if (start.kind === 'unknown' && h === p.basisSha) {
        r.landed.settled++;
        log(`${what}: no journal after a settled one, the image is the original`);
        return 'settled';
      }
      fail(`${what}: killed with no journal left, and the image is neither what it was nor the new image`, true);
      return null;
    };

    /** What the image is before an attempt: its hash when there is no journal. */
    const startOf = async (img: string, settles: boolean): Promise<Start> => {
      if (existsSync(journalPathFor(img))) return settles ? { kind: 'unknown' } : { kind: 'journal' };
      return { kind: 'hash', sha: await sha256File(img) };
    };

    const patchTrial = async (mode: 'patch' | 'recover', p: Pair, trial: string): Promise<void> => {
      await rm(journalPathFor(work), { force: true });
      await copyFile(p.basis, work);
      const kills = 1 + Math.floor(rnd() * o.maxKillsPerTrial);
      const span = spanPatch.get(p.scenario) ?? { start: 0, end: 1000 };
      spanPatch.set(p.scenario, span);
      let finished = false;
      for (let i = 0; i < kills && !finished; i++) {
        const delay = killDelay(rnd, span);
        const start = await startOf(work, false);
        const c = await runCli(['patch', work, p.delta, i === 0 ? '--in-place' : '--resume'], delay);
        if (!c.killed) {
          r.killsTooLate++;
          if (i === 0) shrinkWindow(span, c.ms);
          finished = true;
          if (c.code !== 0) fail(`${trial}: run ${i + 1} exited ${c.code} (${String(c.json?.code)}) without being killed: ${c.stderr.trim()}`);
          else if ((await sha256File(work)) !== p.targetSha) fail(`${trial}: run ${i + 1} reported success but the image differs from the source`, true);
          break;
        }
        r.killPoints++;
        r.byMode[mode].killPoints++;
        // The journal lives from before the first write until the image is final, so
        // without one the image is the basis (killed before the start) or the new image.
        // Finished just before the kill: nothing left to interrupt.
        if ((await afterKill(work, p, start, `${trial} kill ${i + 1} at ${delay.toFixed(0)} ms`)) === 'complete') finished = true;
      }
      if (mode === 'patch') {
        const c = await runCli(['patch', work, p.delta, '--resume']);
        const h = await sha256File(work);
        if (c.code === 0) {
          if (h !== p.targetSha) fail(`${trial}: --resume reported success but the image differs from the source`, true);
          else if (c.json?.nothingToResume === true) {
            // It had finished before the kill: no journal, and --resume says so.
            r.alreadyComplete++;
            bump(r.refusedWhenComplete, 'nothing to resume');
          } else r.resumed++;
        } else if (h === p.targetSha && !existsSync(journalPathFor(work))) {
          // It had finished before the kill; the resume refuses to patch the new image again.
          r.alreadyComplete++;
          bump(r.refusedWhenComplete, String(c.json?.code));
        } else {
          fail(`${trial}: --resume failed with ${String(c.json?.code)}: ${String(c.json?.message)}`, h !== p.targetSha && h !== p.basisSha && !existsSync(journalPathFor(work)));
        }
      } else {
        const c = await runCli(['recover', work]);
        const h = await sha256File(work);
        const outcome = c.json?.outcome;
        if (c.code !== 0) fail(`${trial}: recover failed with ${String(c.json?.code)}: ${String(c.json?.message)}`);
        else if (existsSync(journalPathFor(work))) fail(`${trial}: recover left the journal behind`);
        else if (outcome === 'rolled-back' && h === p.basisSha) r.rolledBack++;
        else if ((outcome === 'completed' || outcome === 'nothing') && h === p.targetSha) r.alreadyComplete++;
        else if (outcome === 'nothing' && h === p.basisSha) r.rolledBack++;
        else fail(`${trial}: recover said ${String(outcome)} but the image is ${h === p.basisSha ? 'the basis' : h === p.targetSha ? 'the new image' : 'neither the basis nor the new image'}`, true);
      }
    };

    const pushTrial = async (mode: 'push' | 'push-recover', p: Pair, trial: string): Promise<void> => {
      await rm(journalPathFor(work), { force: true });
      await copyFile(p.basis, work);
      const kills = mode === 'push-recover' ? 1 : 1 + Math.floor(rnd() * o.maxKillsPerTrial);
      const span = spanPush.get(p.scenario) ?? { start: 0, end: 2000 };
      spanPush.set(p.scenario, span);
      let complete = false;
      for (let i = 0; i < kills && !complete; i++) {
        const start = await startOf(work, true);
        const s = await startServe({ v: `${work}:rw` }, secretFile);
        const delay = killDelay(rnd, span);
        let serverKilled = false;
        const killer = setTimeout(() => (serverKilled = s.proc.kill('SIGKILL')), delay);
        const c = await runCli(['push', p.target, `${LOCAL}:${s.port}/v`, '--secret-file', secretFile]);
        clearTimeout(killer);
        await stopServe(s);
        if (c.code === 0) {
          // The server had verified and answered before it was killed.
          r.killsTooLate++;
          if (i === 0) shrinkWindow(span, c.ms);
          complete = true;
          if ((await sha256File(work)) !== p.targetSha) fail(`${trial}: push reported success but the volume differs from the source`, true);
          break;
        }
        if (!serverKilled) {
          fail(`${trial}: push failed with ${String(c.json?.code)} though the server was not killed: ${String(c.json?.message)}`);
          continue;
        }
        r.killPoints++;
        r.byMode[mode].killPoints++;
        bump(r.clientCodes, String(c.json?.code));
        await afterKill(work, p, start, `${trial} kill ${i + 1} at ${delay.toFixed(0)} ms`);
      }
      if (mode === 'push') {
        const s = await startServe({ v: `${work}:rw` }, secretFile);
        const c = await runCli(['push', p.target, `${LOCAL}:${s.port}/v`, '--secret-file', secretFile]);
        await stopServe(s);
        const h = await sha256File(work);
        if (c.code !== 0) fail(`${trial}: the re-run push failed with ${String(c.json?.code)}: ${String(c.json?.message)}`);
        else if (h !== p.targetSha) fail(`${trial}: the re-run push verified but the volume differs from the source`, true);
        else if (complete) r.alreadyComplete++;
        else r.resumed++;
      } else {
        const c = await runCli(['recover', work]);
        const h = await sha256File(work);
        const outcome = c.json?.outcome;
        if (c.code !== 0) fail(`${trial}: recover failed with ${String(c.json?.code)}: ${String(c.json?.message)}`);
        else if (h === p.basisSha) r.rolledBack++;
        else if (h === p.targetSha) r.alreadyComplete++;
        else fail(`${trial}: recover said ${String(outcome)} but the volume is neither the original nor the source`, true);
      }
    };

    const pullTrial = async (p: Pair, trial: string): Promise<void> => {
      const local = join(root, 'local.img');
      await rm(journalPathFor(local), { force: true });
      await copyFile(p.basis, local);
      const s = await startServe({ src: `${p.target}:ro` }, secretFile);
      try {
        const kills = 1 + Math.floor(rnd() * o.maxKillsPerTrial);
        const span = spanPull.get(p.scenario) ?? { start: 0, end: 2000 };
        spanPull.set(p.scenario, span);
        let complete = false;
        for (let i = 0; i < kills && !complete; i++) {
          const delay = killDelay(rnd, span);
          const start = await startOf(local, true);
          const c = await runCli(['pull', `${LOCAL}:${s.port}/src`, local, '--secret-file', secretFile], delay);
          if (!c.killed) {
            r.killsTooLate++;
            if (i === 0) shrinkWindow(span, c.ms);
            complete = true;
            if (c.code !== 0) fail(`${trial}: pull exited ${c.code} (${String(c.json?.code)}) without being killed`);
            else if ((await sha256File(local)) !== p.targetSha) fail(`${trial}: pull reported success but the image differs from the source`, true);
            break;
          }
          r.killPoints++;
          r.byMode.pull.killPoints++;
          await afterKill(local, p, start, `${trial} kill ${i + 1} at ${delay.toFixed(0)} ms`);
        }
        const c = await runCli(['pull', `${LOCAL}:${s.port}/src`, local, '--secret-file', secretFile]);
        const h = await sha256File(local);
        if (c.code !== 0) fail(`${trial}: the re-run pull failed with ${String(c.json?.code)}: ${String(c.json?.message)}`);
        else if (h !== p.targetSha) fail(`${trial}: the re-run pull verified but the image differs from the source`, true);
        else if (complete) r.alreadyComplete++;
        else r.resumed++;
      } finally {
        await stopServe(s);
      }
    };

    let k = 0;
    while (r.killPoints < o.killPoints && o.modes.length > 0) {
      const mode = o.modes[k % o.modes.length]!;
      const pool = mode === 'patch' || mode === 'recover' ? filePairs : netPairs;
      const p = pool[Math.floor(k / o.modes.length) % pool.length]!;
      const trial = `trial ${++r.trials} (${mode}, ${p.scenario})`;
      r.byMode[mode].trials++;
      const before = r.killPoints;
      if (mode === 'patch' || mode === 'recover') await patchTrial(mode, p, trial);
      else if (mode === 'push' || mode === 'push-recover') await pushTrial(mode, p, trial);
      else await pullTrial(p, trial);
      log(`${trial}: ${r.killPoints - before} kill(s); totals: ${r.killPoints} kill points, ${r.failures.length} failures`);
      k++;
    }

    if (o.faults > 0) await runFaults(o, netPairs, rnd, root, r, log, fail);
  } finally {
    killChildren();
    if (!o.keep) await rm(root, { recursive: true, force: true });
  }
  r.elapsedMs = performance.now() - t0;
  return r;
}

/** Network faults through the proxy, in-process, each followed by a clean retry. */
async function runFaults(
  o: KillPointOptions,
  pairs: Pair[],
  rnd: () => number,
  root: string,
  r: KillPointReport,
  log: (s: string) => void,
  fail: (what: string, silent?: boolean) => void,
): Promise<void> {
  const vol = join(root, 'fault-vol.img');
  const local = join(root, 'fault-local.img');
  const secret = Buffer.from(createHash('sha256').update(`faults-${o.seed}`).digest('base64'));
  const yardsticks = new Map<string, { traffic: Record<Direction, number>; literal: number }>();
  for (let i = 0; i < o.faults; i++) {
    const p = pairs[i % pairs.length]!;
    const dirn: 'push' | 'pull' = rnd() < 0.5 ? 'push' : 'pull';
    const events: { level: string; msg: string }[] = [];
    const srv = new ResyncServer(
      {
        host: LOCAL,
        port: 0,
        secret,
        volumes: { v: { path: vol, writable: true }, src: { path: p.target, writable: false } },
        maxSessions: 4,
        idleTimeoutMs: 5_000,
        handshakeTimeoutMs: 5_000,
      },
      (e) => events.push(e),
    );
    const port = await srv.listen();
    let proxy = await FaultProxy.start(port);
    const img = dirn === 'push' ? vol : local;
    try {
      await rm(journalPathFor(img), { force: true });
      await copyFile(p.basis, img);
      const run = (viaPort: number, idleTimeoutMs = 30_000) =>
        dirn === 'push'
          ? push(p.target, { host: LOCAL, port: viaPort, secret, volume: 'v', idleTimeoutMs })
          : pull(local, { host: LOCAL, port: viaPort, secret, volume: 'src', idleTimeoutMs });
      // A clean run through the proxy measures the traffic the fault is placed in (once per pair and direction).
      const key = `${p.scenario}-${dirn}`;
      let base = yardsticks.get(key);
      if (!base) {
        const full = await run(proxy.port);
        base = { traffic: { up: proxy.bytes.up, down: proxy.bytes.down }, literal: full.literalBytes };
        yardsticks.set(key, base);
        await copyFile(p.basis, img);
      }
      const traffic = base.traffic;
      const direction: Direction = rnd() < 0.5 ? 'up' : 'down';
      const at = Math.floor(rnd() * traffic[direction]);
      const kind = rnd() < 0.75 ? 'cut' : 'stall';
      proxy.rules = kind === 'cut' ? { [direction]: { cutAfter: at, cutMode: rnd() < 0.5 ? 'close' : 'reset' } } : { [direction]: { stall: { after: at, ms: Infinity } } };
      const label = `fault ${i + 1} (${dirn} ${p.scenario}, ${kind} ${direction} at ${at} of ${traffic[direction]} bytes)`;
      const t0 = performance.now();
      let code = 'none';
      const sessionsBefore = events.filter((e) => e.level !== 'info' || e.msg.endsWith('finished')).length;
      try {
        await run(proxy.port, kind === 'stall' ? 1_500 : 30_000);
      } catch (e) {
        code = (e as { code?: string }).code ?? 'untyped';
      }
      const ms = performance.now() - t0;
      r.faultsInjected++;
      bump(r.faultKinds, `${kind}-${direction}`);
      bump(r.faultCodes, code);
      if (code === 'untyped') fail(`${label}: the client failed with an untyped error`);
      if (ms > 30_000) fail(`${label}: the failure took ${ms.toFixed(0)} ms to surface`);
      // A black hole hides the client's close from the server: drop the link for good.
      await proxy.close();
      proxy = await FaultProxy.start(port);
      const t1 = Date.now();
      while (srv.connections > 0 || events.filter((e) => e.level !== 'info' || e.msg.endsWith('finished')).length <= sessionsBefore) {
        if (Date.now() - t1 > 15_000) break;
        await new Promise((res) => setTimeout(res, 20));
      }
      if (!existsSync(journalPathFor(img))) {
        const h = await sha256File(img);
        if (h !== p.basisSha && h !== p.targetSha) fail(`${label}: no journal after the fault, and the image is neither the original nor the source`, true);
      }
      const retry = await run(port);
      if ((await sha256File(img)) !== p.targetSha) fail(`${label}: the retry verified but the image differs from the source`, true);
      if ((retry.resumedFrom ?? 0) > 0) r.faultRetriesResumed++;
      r.faultRetryBytes += retry.literalBytes;
      r.faultFullBytes += base.literal;
      log(`${label}: ${code} after ${ms.toFixed(0)} ms; retry resumed from ${retry.resumedFrom ?? 0}, sent ${retry.literalBytes} literal bytes of ${base.literal}`);
    } catch (e) {
      fail(`fault ${i + 1}: ${(e as Error).message}`);
    } finally {
      await proxy.close();
      await srv.close();
    }
  }
}

/** The report as a few lines of text. */
export function formatReport(r: KillPointReport): string {
  const lines = [
    `kill points: ${r.killPoints} (kills after the receiver had finished, not counted: ${r.killsTooLate}) in ${r.trials} trials, seed ${r.seed}`,
    `  by mode: ${MODES.filter((m) => r.byMode[m].trials > 0).map((m) => `${m} ${r.byMode[m].killPoints} kills / ${r.byMode[m].trials} trials`).join(', ')}`,
    `  image after the kill: journal present ${r.landed.journal} (with undo records ${r.landedAfterWrites}, past a checkpoint ${r.landedAfterCheckpoint}), untouched ${r.landed.untouched}, already complete ${r.landed.complete}, settled by a server then killed ${r.landed.settled}`,
    `  journals left without a readable header (killed while creating it): ${r.tornJournal}`,
    `  client errors when the server was killed: ${JSON.stringify(r.clientCodes)}`,
    `  resumed to the source: ${r.resumed}; rolled back to the original: ${r.rolledBack}; found complete: ${r.alreadyComplete} (what patch --resume then said: ${JSON.stringify(r.refusedWhenComplete)})`,
    `network faults injected: ${r.faultsInjected} ${JSON.stringify(r.faultKinds)}; client errors ${JSON.stringify(r.faultCodes)}`,
    `  retries that resumed past 0: ${r.faultRetriesResumed}; literal bytes resent ${r.faultRetryBytes} of ${r.faultFullBytes} for full runs`,
    `silent corruption: ${r.silentCorruption}; failures: ${r.failures.length}`,
    ...r.failures.map((f) => `  - ${f}`),
    `elapsed: ${(r.elapsedMs / 1000).toFixed(1)} s (patch images ${r.sizeMiB} MiB, push/pull images ${r.pushSizeMiB} MiB, scenarios ${r.scenarios.join(', ')})`,
  ];
  return lines.join('\n');
}

function parseArgs(argv: string[]): KillPointOptions & { json: boolean } {
  const o: KillPointOptions & { json: boolean } = {
    killPoints: 60,
    faults: 30,
    sizeMiB: 128,
    pushSizeMiB: 32,
    seed: 1,
    scenarios: ['shifted', 'mixed', 'different'],
    modes: MODES,
    maxKillsPerTrial: 3,
    json: false,
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const v = (): string => {
      const x = argv[++i];
      if (x === undefined) throw new Error(`${a} needs a value`);
      return x;
    };
    const num = (): number => {
      const s = v();
      const n = Number(s);
      if (!Number.isFinite(n) || n < 0) throw new Error(`${a} needs a non-negative number, got ${s}`);
      return n;
    };
    if (a === '--n') o.killPoints = num();
    else if (a === '--faults') o.faults = num();
    else if (a === '--size') o.sizeMiB = num();
    else if (a === '--push-size') o.pushSizeMiB = num();
    else if (a === '--seed') o.seed = num();
    else if (a === '--max-kills') o.maxKillsPerTrial = Math.max(1, num());
    else if (a === '--scenarios') o.scenarios = v().split(',') as Scenario[];
    else if (a === '--modes') {
      const ms = v().split(',');
      for (const m of ms) if (!(MODES as readonly string[]).includes(m)) throw new Error(`unknown mode ${m}; modes: ${MODES.join(',')}`);
      o.modes = ms as Mode[];
    } else if (a === '--dir') o.dir = v();
    else if (a === '--keep') o.keep = true;
    else if (a === '--json') o.json = true;
    else throw new Error(`unknown option ${a}`);
  }
  return o;
}

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  const stop = (): void => {
    killChildren();
    process.exit(130);
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  const r = await runKillPoints({ ...o, log: (l) => process.stderr.write(`${l}\n`) });
  process.stdout.write(o.json ? `${JSON.stringify(r, null, 2)}\n` : `${formatReport(r)}\n`);
  process.exitCode = r.failures.length === 0 && r.silentCorruption === 0 ? 0 : 1;
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  main().catch((e: unknown) => {
    killChildren();
    process.stderr.write(`killpoints: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    process.exitCode = 2;
  });
}
