/** What the bench ran on: CPU, memory, versions, the temp directory's filesystem. */
import { readFile, statfs } from 'node:fs/promises';
import { cpus, loadavg, release, totalmem } from 'node:os';
import { capture } from './measure.js';
import { peerVersions } from './peers.js';

/** The machine line of the report. */
export interface Machine {
  cpu: string;
  /** Logical CPUs. */
  cpus: number;
  ramBytes: number;
  kernel: string;
  node: string;
  rdiff: string;
  rsync: string;
  /** ISO date and time the run started. */
  date: string;
  /** 1-minute load average when the run started (other work on the machine skews timings). */
  loadAvg: number;
  /** The same when the run ended. */
  loadAvgEnd?: number;
  tmpDir: string;
  tmpFs: string;
  /** Which resync was measured: commit, and whether src/ or protocol/ had uncommitted changes. */
  resync: string;
}

const FS_TYPES: Record<number, string> = {
  0xef53: 'ext4',
  0x58465342: 'xfs',
  0x9123683e: 'btrfs',
  0x01021994: 'tmpfs',
  0x794c7630: 'overlayfs',
  0x2fc12fc1: 'zfs',
  0x6969: 'nfs',
};

/** Filesystem type of `path` (statfs magic), e.g. "ext4" or "tmpfs". */
export async function fsType(path: string): Promise<string> {
  const t = (await statfs(path)).type;
  return FS_TYPES[t] ?? `0x${t.toString(16)}`;
}

/** Free bytes on the filesystem of `path`. */
export async function freeBytes(path: string): Promise<number> {
  const s = await statfs(path);
  return s.bavail * s.bsize;
}

async function cpuModel(): Promise<string> {
  const text = await readFile('/proc/cpuinfo', 'utf8').catch(() => '');
  const m = /^model name\s*:\s*(.+)$/m.exec(text);
  return (m?.[1] ?? cpus()[0]?.model ?? 'unknown').replace(/\s+/g, ' ').trim();
}

async function resyncRevision(projectRoot: string): Promise<string> {
  try {
    const head = (await capture('git', ['-C', projectRoot, 'rev-parse', '--short', 'HEAD'])).trim();
    const dirty = (await capture('git', ['-C', projectRoot, 'status', '--porcelain', '--', 'src', 'protocol'])).trim();
    return dirty === '' ? `commit ${head}` : `commit ${head} with uncommitted changes in src/ or protocol/`;
  } catch {
    return 'unknown revision (not a git checkout)';
  }
}

/** Collect the machine line. */
export async function describeMachine(projectRoot: string, tmpDir: string): Promise<Machine> {
  const peers = await peerVersions();
  return {
    cpu: await cpuModel(),
    cpus: cpus().length,
    ramBytes: totalmem(),
    kernel: release(),
    node: process.version,
    rdiff: peers.rdiff,
    rsync: peers.rsync,
    date: new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
    loadAvg: loadavg()[0] ?? 0,
    tmpDir,
    tmpFs: await fsType(tmpDir),
    resync: await resyncRevision(projectRoot),
  };
}
