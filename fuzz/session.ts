/**
 * The server-session target: a live ResyncServer on 127.0.0.1 and a raw
 * client that sends the fuzzer's bytes at a chosen point of the protocol.
 *
 * Input layout: byte 0 picks the phase, the rest is sent as is.
 *   0  right after connecting (no preamble)
 *   1  after our preamble (pre-authentication frames)
 *   2  after a successful authentication (Open and what follows)
 *   3  after Open push on an in-place volume and the server's whole signature (delta frames)
 *   4  the same on a temp-file volume
 *   5  after Open pull (the client's signature frames, then Result)
 * Then the client half-closes and waits for the server to close.
 *
 * After every input: no non-SyncError escaped the session (the server logs
 * those as ERR_INTERNAL), the connection closed, the server holds no socket
 * and no temp file, and a volume only changed if the server verified the new
 * image (or left a resume journal after an interruption). check() pushes a
 * real image with the real client to prove the server still serves.
 */
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ResyncServer, type ServerEvent } from '../src/net/server.js';
import { push } from '../src/net/client.js';
import { journalPathFor } from '../src/io/journal.js';
import { MsgType } from '../protocol/constants.js';
import type { SigHeaderMsg } from '../protocol/messages.js';
import { FuzzFinding } from './reference.js';
import { corpusImage, editedImage } from './images.js';
import type { Outcome } from './targets.js';
import { RawClient, wirePreamble } from './wire.js';
import { heldUnder } from '../src/testing/fds.js';
import { modelDeltaTarget, substituteLive } from './shape.js';

/** The image every fuzzed volume starts from (and is restored to). */
export const SESSION_BASIS = corpusImage(32 * 1024);
/** The shared secret of the fuzzing server (fixed, so inputs are reproducible). */
export const SESSION_SECRET = Buffer.from('fuzz-secret-not-for-production-use');
/** Number of phases byte 0 selects from. */
export const SESSION_PHASES = 6;
/** Volumes of the fuzzing server. */
export const SESSION_VOLUMES = { inPlace: 'vol', tempFile: 'tmpvol', readOnly: 'ro', health: 'health' } as const;

/**
 * Most memory (ArrayBuffer bytes, process-wide) one input may make the server
 * reserve above what it held when the input began. Sessions on these 32 KiB
 * volumes need a few MiB (a 16 MiB first in-place batch at most); a
 * header's claim sized into memory before data backs it is tens to hundreds.
 */
export const SESSION_RESERVE_LIMIT = 96 * 1024 * 1024;

/** Sample the process's ArrayBuffer bytes while an input runs; check() throws past SESSION_RESERVE_LIMIT. */
function watchReserved(): { check(): void; stop(): void } {
  const base = process.memoryUsage().arrayBuffers;
  let peak = base;
  const sample = (): void => {
    const a = process.memoryUsage().arrayBuffers;
    if (a > peak) peak = a;
  };
  const timer = setInterval(sample, 2);
  return {
    check() {
      sample();
      if (process.env.RESYNC_FUZZ_RESERVED) process.stderr.write(`reserved ${((peak - base) / 2 ** 20).toFixed(1)} MiB\n`);
      if (peak - base > SESSION_RESERVE_LIMIT) {
        throw new FuzzFinding(`one input made the server reserve ${((peak - base) / 2 ** 20).toFixed(0)} MiB (ArrayBuffer bytes), more than ${SESSION_RESERVE_LIMIT / 2 ** 20}: memory must follow the data that came, not what a header claims`);
      }
    },
    stop() {
      clearInterval(timer);
    },
  };
}

/** A started session target. */
export interface SessionTarget {
  readonly port: number;
  /** Send one input; returns its outcome label or throws a finding. */
  run(data: Uint8Array): Promise<Outcome>;
  /** Prove the server still completes a real push. */
  check(): Promise<void>;
  close(): Promise<void>;
}

/** Options for the fuzzing server. */
export interface SessionTargetOptions {
  handshakeTimeoutMs?: number;
  idleTimeoutMs?: number;
  /** How long a finished client waits for the server to close. */
  closeTimeoutMs?: number;
}

/** Start a server in a fresh temp directory and return the target. */
export async function openSessionTarget(opts: SessionTargetOptions = {}): Promise<SessionTarget> {
  const dir = await mkdtemp(join(tmpdir(), 'resync-fuzz-'));
  const path = (name: string) => join(dir, `${name}.img`);
  const fuzzed = [SESSION_VOLUMES.inPlace, SESSION_VOLUMES.tempFile, SESSION_VOLUMES.readOnly];
  for (const v of fuzzed) await writeFile(path(v), SESSION_BASIS);
  await writeFile(path(SESSION_VOLUMES.health), corpusImage(20_000));
  const events: ServerEvent[] = [];
  const server = new ResyncServer(
    {
      host: '127.0.0.1',
      port: 0,
      secret: SESSION_SECRET,
      volumes: {
        [SESSION_VOLUMES.inPlace]: { path: path(SESSION_VOLUMES.inPlace), writable: true },
        [SESSION_VOLUMES.tempFile]: { path: path(SESSION_VOLUMES.tempFile), writable: true, inPlace: false },
        [SESSION_VOLUMES.readOnly]: { path: path(SESSION_VOLUMES.readOnly), writable: false },
        [SESSION_VOLUMES.health]: { path: path(SESSION_VOLUMES.health), writable: true },
      },
      maxSessions: 8,
      idleTimeoutMs: opts.idleTimeoutMs ?? 3000,
      handshakeTimeoutMs: opts.handshakeTimeoutMs ?? 3000,
    },
    (e) => events.push(e),
  );
  const port = await server.listen();
  const closeTimeoutMs = opts.closeTimeoutMs ?? 6000;
  let healthRuns = 0;

  /** Reach `phase`; returns the server's signature header when there is one. */
  async function setup(c: RawClient, phase: number): Promise<SigHeaderMsg | null> {
    if (phase === 0) return null;
    if (phase === 1) {
      c.write(wirePreamble());
      return null;
    }
    await c.authenticate(SESSION_SECRET);
    if (phase === 2) return null;
    const volume = phase === 4 ? SESSION_VOLUMES.tempFile : SESSION_VOLUMES.inPlace;
    const mode = phase === 5 ? 'pull' : 'push';
    c.send({ type: MsgType.Open, mode, volume, imageSize: SESSION_BASIS.length, blockSize: 0, resumeId: '' });
    await c.expect(MsgType.Ready);
    if (mode === 'pull') return null;
    const sh = (await c.expect(MsgType.SigHeader)) as SigHeaderMsg;
    for (;;) {
      const m = await c.at(c.cursor, 5000);
      if (!m) throw new FuzzFinding('the server stopped before sending its whole signature');
      c.cursor++;
      if (m.type === MsgType.SigEnd) return sh;
    }
  }

  /** Events the server logged for one client, and whether its session has ended. */
  const ofPeer = (peer: string) => events.filter((e) => e.peer === peer);
  const ended = (evs: readonly ServerEvent[]) => evs.some((e) => e.level !== 'info' || e.msg.endsWith('finished'));

  /** Files of the volumes' directory this process (the server's) holds open: none once a session is over. */
  const openHere = (): string[] => (existsSync('/proc/self/fd') ? heldUnder(`${dir}/`).map((l) => l.slice(dir.length + 1)) : []);

  /**
   * Wait until the server is done with this client: its session logged its
   * end (it may still be working through queued messages after the socket
   * closed), no socket is left, no temp file, and no descriptor of a file
   * beside the volumes (one dropped unclosed waits for the garbage collector).
   */
  async function settle(peer: string): Promise<void> {
    const deadline = Date.now() + 5000;
    for (;;) {
      const temps = (await readdir(dir)).filter((f) => f.endsWith('.tmp'));
      const done = ended(ofPeer(peer));
      const held = done && server.connections === 0 && temps.length === 0 ? openHere() : [];
      if (done && server.connections === 0 && temps.length === 0 && held.length === 0) return;
      if (Date.now() > deadline) {
        throw new FuzzFinding(
          `the server did not finish with a client that left: session ${done ? 'ended' : 'still running'}, ${server.connections} connection(s), temp files [${temps.join(', ')}], files held open [${held.join(', ')}]`,
        );
      }
      await new Promise((r) => setTimeout(r, 2));
    }
  }

  /**
   * A volume may only have changed into exactly what the input's delta
   * describes (when that delta is valid end to end: the server verified it),
   * or be mid-way with a resume journal after an interruption. The read-only
   * volume never changes. Every volume is restored afterwards.
   */
  async function checkVolumes(expected: Uint8Array | null): Promise<void> {
    let problem: string | null = null;
    for (const v of fuzzed) {
      const p = path(v);
      const now = await readFile(p);
      const journal = existsSync(journalPathFor(p));
      const changed = !now.equals(SESSION_BASIS);
      if (changed && !problem) {
        const ok = v !== SESSION_VOLUMES.readOnly && (journal || (expected !== null && now.equals(expected)));
        if (!ok) problem = `volume ${v} changed (${now.length} bytes) into something no valid delta in the input describes, with no resume journal`;
      }
      if (changed || journal) {
        await writeFile(p, SESSION_BASIS);
        await rm(journalPathFor(p), { force: true });
      }
    }
    if (problem) throw new FuzzFinding(problem);
  }

  /**
   * No session may end in a non-SyncError: the server logs those as
   * ERR_INTERNAL, and the connection relabels one thrown while decoding as
   * ERR_PROTOCOL "bad data from the peer: <the error>", which hides a bug too.
   */
  function checkEvents(): void {
    const internal = events.find((e) => e.code === 'ERR_INTERNAL');
    const relabelled = events.find((e) => /bad data from the peer: \w*Error\b/.test(e.msg));
    events.length = 0;
    if (internal) throw new FuzzFinding(`a non-SyncError escaped the server session: ${internal.msg}`);
    if (relabelled) throw new FuzzFinding(`a non-SyncError thrown while decoding the peer's bytes was relabelled ERR_PROTOCOL: ${relabelled.msg.replace(/^.*?bad data from the peer: /, '')}`);
  }

  /** One input: connect, reach its phase, send its bytes, and check what the server did. */
  async function runInput(data: Uint8Array): Promise<Outcome> {
    const phase = (data[0] ?? 0) % SESSION_PHASES;
    const body = data.subarray(1);
    const c = await RawClient.connect(port);
    const peer = `127.0.0.1:${c.socket.localPort}`;
    let sh: SigHeaderMsg | null;
    try {
      sh = await setup(c, phase);
    } catch (e) {
      c.destroy();
      throw e instanceof FuzzFinding ? e : new FuzzFinding(`a valid client could not reach phase ${phase}: ${(e as Error).message}`, { cause: e });
    }
    const start = c.cursor;
    const sent = sh ? substituteLive(body, sh, SESSION_BASIS) : body;
    c.write(sent);
    c.end();
    if (!(await c.waitClosed(closeTimeoutMs))) {
      c.destroy();
      throw new FuzzFinding(`the server kept the connection open ${closeTimeoutMs} ms after the client finished (phase ${phase})`);
    }
    if (c.decodeError) throw new FuzzFinding('the server sent bytes that do not decode', { cause: c.decodeError });
    await settle(peer);
    await checkVolumes(sh ? modelDeltaTarget(sent, SESSION_BASIS) : null);
    const seen: string[] = [];
    for (const m of c.received.slice(start)) {
      const s = m.type === MsgType.Error ? `err:${m.code}` : m.type.toString(16);
      if (seen[seen.length - 1] !== s) seen.push(s);
    }
    const last = ofPeer(peer).filter((e) => e.level !== 'info' || e.msg.endsWith('finished')).map((e) => e.code ?? e.msg)[0];
    checkEvents();
    return `p${phase} ${seen.slice(0, 6).join(' ')} / ${last}`;
  }

  return {
    port,
    async run(data: Uint8Array): Promise<Outcome> {
      const memory = watchReserved();
      try {
        const outcome = await runInput(data);
        memory.check();
        return outcome;
      } finally {
        memory.stop();
      }
    },
    async check(): Promise<void> {
      healthRuns++;
      const src = join(dir, 'health-src.img');
      const img = editedImage(corpusImage(20_000), healthRuns);
      await writeFile(src, img);
      const r = await push(src, { host: '127.0.0.1', port, volume: SESSION_VOLUMES.health, secret: SESSION_SECRET });
      const got = await readFile(path(SESSION_VOLUMES.health));
      if (!r.verified || !got.equals(img)) throw new FuzzFinding('a valid push after fuzzing did not make the volume identical');
      // The client returns on Result; the server still holds the volume until it has closed its
      // files. Wait for that, or the next check would find the volume busy.
      const deadline = Date.now() + 5000;
      while (!events.some((e) => e.volume === SESSION_VOLUMES.health && e.msg === 'push finished') || server.connections > 0) {
        if (Date.now() > deadline) throw new FuzzFinding('the server did not finish a valid push within 5 s of its Result');
        await new Promise((res) => setTimeout(res, 2));
      }
      checkEvents();
    },
    async close(): Promise<void> {
      await server.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
