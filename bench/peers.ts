/**
 * The tools resync is measured against: `rdiff` (librsync) for the offline
 * signature/delta/patch steps, and an rsync daemon with the rsync client for
 * transfers over TCP. Debian packages: `rdiff`, `rsync`.
 */
import { writeFile, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { capture, freePort, waitFor, type Meter, type ProcResult } from './measure.js';

/** rsync refuses block sizes above this (MAX_BLOCK_SIZE for protocol 30 and later). */
export const RSYNC_MAX_BLOCK = 128 * 1024;

/** First line of each peer's `--version`; throws with an install hint when one is missing. */
export async function peerVersions(): Promise<{ rdiff: string; rsync: string }> {
  const first = async (cmd: string): Promise<string> => {
    let out: string;
    try {
      out = await capture(cmd, ['--version']);
    } catch (e) {
      throw new Error(`${cmd} is not installed or does not run (apt-get install -y ${cmd}): ${e instanceof Error ? e.message : String(e)}`, { cause: e });
    }
    return (out.split('\n')[0] ?? '').replace(/\s+/g, ' ').trim();
  };
  return { rdiff: await first('rdiff'), rsync: await first('rsync') };
}

/** `rdiff` (librsync) with its defaults except the block size. */
export class Rdiff {
  constructor(private readonly meter: Meter) {}

  private run(args: string[]): Promise<ProcResult> {
    return this.meter.run('rdiff', ['--force', ...args]);
  }

  /** `rdiff -b BLOCK signature BASIS SIG`. */
  signature(basis: string, sig: string, blockSize: number): Promise<ProcResult> {
    return this.run(['--block-size', String(blockSize), 'signature', basis, sig]);
  }

  /** `rdiff delta SIG NEW DELTA`. */
  delta(sig: string, target: string, delta: string): Promise<ProcResult> {
    return this.run(['delta', sig, target, delta]);
  }

  /** `rdiff patch BASIS DELTA OUT`. */
  patch(basis: string, delta: string, out: string): Promise<ProcResult> {
    return this.run(['patch', basis, delta, out]);
  }
}

/** Figures from the client's `--stats`. */
export interface RsyncStats {
  bytesSent: number;
  bytesReceived: number;
  literalBytes: number;
  matchedBytes: number;
}

function statField(text: string, label: string): number {
  const m = new RegExp(`^${label}:\\s+([\\d,]+)`, 'm').exec(text);
  if (m?.[1] === undefined) throw new Error(`rsync --stats output has no "${label}" line:\n${text}`);
  return Number(m[1].replace(/,/g, ''));
}

/** Parse the `--stats` block printed by the rsync client. */
export function parseRsyncStats(stdout: string): RsyncStats {
  return {
    bytesSent: statField(stdout, 'Total bytes sent'),
    bytesReceived: statField(stdout, 'Total bytes received'),
    literalBytes: statField(stdout, 'Literal data'),
    matchedBytes: statField(stdout, 'Matched data'),
  };
}

/** Name of the daemon's module. */
export const RSYNC_MODULE = 'vol';

/** A running `rsync --daemon` on 127.0.0.1. */
export interface RsyncDaemon {
  port: number;
  /** Wait for the connection it is serving to finish, stop it, and return its measurements. */
  stop(): Promise<ProcResult>;
}

/** rsyncd.conf with one writable module at `modulePath`, listening on 127.0.0.1 only. */
export function rsyncdConf(dir: string, modulePath: string): string {
  const asRoot = process.getuid?.() === 0;
  return [
    'address = 127.0.0.1',
    'use chroot = no',
    `log file = ${join(dir, 'rsyncd.log')}`,
    `lock file = ${join(dir, 'rsyncd.lock')}`,
    // As root the daemon would otherwise switch to "nobody", who cannot write the module.
    ...(asRoot ? ['uid = 0', 'gid = 0'] : []),
    '',
    `[${RSYNC_MODULE}]`,
    `path = ${modulePath}`,
    'read only = no',
    '',
  ].join('\n');
}

/**
 * Start `rsync --daemon --no-detach` serving `modulePath`. Its config and log
 * live in `dir`. Returns once the daemon logs that it is listening.
 */
export async function startRsyncDaemon(meter: Meter, dir: string, modulePath: string): Promise<RsyncDaemon> {
  const conf = join(dir, 'rsyncd.conf');
  const log = join(dir, 'rsyncd.log');
  await writeFile(conf, rsyncdConf(dir, modulePath));
  let lastError: unknown;
  // The free port may be taken between probing and binding; try a few.
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = await freePort();
    await writeFile(log, '');
    const proc = meter.start('rsync', ['--daemon', '--no-detach', '--port', String(port), '--config', conf]);
    try {
      await waitFor('the rsync daemon to listen', proc, async () => {
        const text = await readFile(log, 'utf8').catch(() => '');
        return text.includes(`listening on port ${port}`) ? true : undefined;
      });
    } catch (e) {
      lastError = e;
      await proc.signal('SIGKILL');
      await proc.wait().catch(() => undefined);
      continue;
    }
    return {
      port,
      stop: async () => {
        // Let the connection's processes finish so that their peak RSS is reported, then stop the daemon.
        await proc.waitNoChildren();
        await proc.signal('SIGTERM');
        return await proc.wait();
      },
    };
  }
  throw new Error(`could not start the rsync daemon: ${lastError instanceof Error ? lastError.message : String(lastError)}`);
}

/** How rsync updates the destination file. */
export type RsyncMode = 'inplace' | 'temp';
export const RSYNC_MODES: readonly RsyncMode[] = ['inplace', 'temp'];

/**
 * `rsync --no-whole-file [--inplace] --stats --ignore-times -B BLOCK SRC DEST`,
 * where one of SRC and DEST is `rsync://127.0.0.1:PORT/vol/NAME` (push when
 * DEST is, pull when SRC is): the delta algorithm over loopback (rsync would
 * send whole files between local paths), never skipping the file on a
 * size-and-mtime match. `inplace` updates the destination where it is, as
 * resync does; `temp` is rsync's default: a temporary file beside it, renamed
 * over it at the end.
 */
export function rsyncTransfer(meter: Meter, src: string, dest: string, blockSize: number, mode: RsyncMode): Promise<ProcResult> {
  return meter.run('rsync', [
    '--no-whole-file',
    ...(mode === 'inplace' ? ['--inplace'] : []),
    '--stats',
    '--ignore-times',
    '-B',
    String(blockSize),
    src,
    dest,
  ]);
}

/** The daemon URL of file `name` in its module. */
export function rsyncUrl(port: number, name: string): string {
  return `rsync://127.0.0.1:${port}/${RSYNC_MODULE}/${name}`;
}

/** `sync FILE`: fsync of one file (coreutils), what a durable `rdiff patch` would add. */
export function syncFile(meter: Meter, path: string): Promise<ProcResult> {
  return meter.run('sync', [path]);
}
