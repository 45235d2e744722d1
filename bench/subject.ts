/**
 * resync as the bench runs it: `node [options of its #! line] bin/resync.js`, through env where that
 * line has env change variables first (binLaunch), so as the installed command runs (the bundle with its code
 * cache), with the native extent helper (build/), from a copy of the build
 * taken when the bench starts, so that a rebuild in the working tree during a
 * long run cannot change the program halfway.
 */
import { readFileSync } from 'node:fs';
import { cp, mkdir, stat, symlink } from 'node:fs/promises';
import { join } from 'node:path';
import { checkExit, waitFor, type Meter, type ProcResult } from './measure.js';

/**
 * Copy the build (bin/, dist/ and package.json) from `projectRoot` into `dest`, with
 * node_modules linked to the project's. Returns the path of the copied CLI
 * entry point.
 */
export async function snapshotBuild(projectRoot: string, dest: string): Promise<string> {
  const main = join(projectRoot, 'dist', 'resync.cjs');
  try {
    await stat(main);
  } catch {
    throw new Error(`${main} is missing: build first (npm run build)`);
  }
  await mkdir(dest, { recursive: true });
  // Timestamps kept: the code cache is used only with the bundle it was made from (same size and mtime).
  await cp(join(projectRoot, 'dist'), join(dest, 'dist'), { recursive: true, preserveTimestamps: true, filter: (src) => !src.endsWith('.map') });
  await cp(join(projectRoot, 'bin'), join(dest, 'bin'), { recursive: true });
  await cp(join(projectRoot, 'build'), join(dest, 'build'), { recursive: true }).catch((e: NodeJS.ErrnoException) => {
    // Not built (no C compiler): resync then reads holes like data, and the bench measures that.
    if (e.code !== 'ENOENT') throw e;
  });
  await cp(join(projectRoot, 'package.json'), join(dest, 'package.json'));
  await symlink(join(projectRoot, 'node_modules'), join(dest, 'node_modules'), 'dir');
  return join(dest, 'bin', 'resync.js');
}

/** How the CLI's `#!/usr/bin/env -S [-u VAR]... [VAR=VALUE]... node [OPTION]...` line starts it. */
export interface BinLaunch {
  /** Variables env removes from the environment before starting node. */
  unset: string[];
  /** Variables env sets, `${VAR}` in their values expanded from this process's environment. */
  set: string[];
  /** Node's options. */
  nodeArgs: string[];
}

/**
 * What the CLI's first line does before the script runs: the variables env
 * unsets and sets, and the node options, so the bench, which starts it as
 * `node bin/resync.js`, runs the same program as the installed `resync`
 * command.
 */
export function binLaunch(cliPath: string, env: NodeJS.ProcessEnv = process.env): BinLaunch {
  const first = readFileSync(cliPath, 'utf8').split('\n', 1)[0] ?? '';
  const m = /^#!\S*env -S((?:\s+-u\s+\S+)*)((?:\s+[A-Za-z_][A-Za-z0-9_]*=\S*)*)\s+node((?:\s+--?\S+)*)\s*$/.exec(first);
  if (!m) return { unset: [], set: [], nodeArgs: [] };
  const words = (s: string): string[] => s.trim().split(/\s+/).filter(Boolean);
  const expand = (w: string): string => w.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g, (_, v: string) => env[v] ?? '');
  return { unset: words(m[1]!).filter((w) => w !== '-u'), set: words(m[2]!).map(expand), nodeArgs: words(m[3]!) };
}

/** A measured resync command and its `--json` summary. */
export interface ResyncRun {
  proc: ProcResult;
  summary: Record<string, unknown>;
}

/** A number field of a summary; throws if it is missing. */
export function field(r: ResyncRun, key: string): number {
  const v = r.summary[key];
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new Error(`${r.proc.command}: summary has no number "${key}": ${JSON.stringify(r.summary)}`);
  return v;
}

function parseSummary(proc: ProcResult): ResyncRun {
  checkExit(proc);
  const lines = proc.stdout.trim().split('\n');
  const last = lines[lines.length - 1] ?? '';
  let summary: unknown;
  try {
    summary = JSON.parse(last);
  } catch {
    throw new Error(`${proc.command}: expected a JSON summary on stdout, got: ${proc.stdout.slice(0, 500)}`);
  }
  if (typeof summary !== 'object' || summary === null || (summary as { ok?: unknown }).ok !== true) {
    throw new Error(`${proc.command}: summary is not ok: ${last}`);
  }
  return { proc, summary: summary as Record<string, unknown> };
}

/**
 * A stopped server's run: it exited 0, and its summary is the last record of
 * its log (JSON lines on stderr), "stopped: N session(s) finished, ...".
 */
function parseServerLog(proc: ProcResult): ResyncRun {
  checkExit(proc);
  const last = proc.stderr.trim().split('\n').pop() ?? '';
  let rec: unknown;
  try {
    rec = JSON.parse(last);
  } catch {
    throw new Error(`${proc.command}: expected JSON log lines on stderr, got: ${proc.stderr.slice(-500)}`);
  }
  if (typeof rec !== 'object' || rec === null || !String((rec as { msg?: unknown }).msg).startsWith('stopped')) {
    throw new Error(`${proc.command}: the server did not log its stop: ${last}`);
  }
  return { proc, summary: rec as Record<string, unknown> };
}

/** A running `resync serve`. */
export interface ResyncServer {
  port: number;
  /** SIGTERM the server, wait for it to exit and return its measurements. */
  stop(): Promise<ResyncRun>;
}

/** The resync CLI, every command run with `--json` and measured. */
export class ResyncCli {
  /** The program the bench starts: node, or env where the CLI's first line unsets or sets variables. */
  readonly command: string;
  /** Its arguments before the command's own: env's, node's options, the CLI. */
  readonly prefix: string[];

  constructor(
    private readonly meter: Meter,
    /** Path of the CLI entry point. */
    readonly cliPath: string,
  ) {
    const { unset, set, nodeArgs } = binLaunch(cliPath);
    const node = [...nodeArgs, cliPath];
    const viaEnv = unset.length > 0 || set.length > 0;
    this.command = viaEnv ? '/usr/bin/env' : process.execPath;
    this.prefix = viaEnv ? [...unset.flatMap((v) => ['-u', v]), ...set, process.execPath, ...node] : node;
  }

  /** Run the CLI with `args`, measured, as it is (no summary read). */
  launch(args: readonly string[]): Promise<ProcResult> {
    return this.meter.run(this.command, [...this.prefix, ...args]);
  }

  private async run(args: string[]): Promise<ResyncRun> {
    return parseSummary(await this.launch(args));
  }

  // --force: repeated runs write the same outputs again.

  /** `resync signature --force BASIS SIG [--block-size N]`. */
  signature(basis: string, sig: string, blockSize?: number): Promise<ResyncRun> {
    return this.run(['signature', '--json', '--force', ...(blockSize !== undefined ? ['--block-size', String(blockSize)] : []), basis, sig]);
  }

  /** `resync delta --force SIG NEW DELTA`. */
  delta(sig: string, target: string, delta: string): Promise<ResyncRun> {
    return this.run(['delta', '--json', '--force', sig, target, delta]);
  }

  /** `resync patch --force BASIS DELTA OUT`. */
  patch(basis: string, delta: string, out: string): Promise<ResyncRun> {
    return this.run(['patch', '--json', '--force', basis, delta, out]);
  }

  /** `resync push IMAGE 127.0.0.1:PORT/VOLUME`. */
  push(image: string, port: number, volume: string, secretFile: string, blockSize?: number): Promise<ResyncRun> {
    return this.run([
      'push',
      '--json',
      '--secret-file',
      secretFile,
      ...(blockSize !== undefined ? ['--block-size', String(blockSize)] : []),
      image,
      `127.0.0.1:${port}/${volume}`,
    ]);
  }

  /** `resync push IMAGE 127.0.0.1:PORT1/VOLUME 127.0.0.1:PORT2/VOLUME ...`: several replicas from one read. */
  pushMany(image: string, ports: readonly number[], volume: string, secretFile: string): Promise<ResyncRun> {
    return this.run(['push', '--json', '--secret-file', secretFile, image, ...ports.map((p) => `127.0.0.1:${p}/${volume}`)]);
  }

  /** `resync pull 127.0.0.1:PORT/VOLUME IMAGE` (in place, the default). */
  pull(port: number, volume: string, image: string, secretFile: string, blockSize?: number): Promise<ResyncRun> {
    return this.run([
      'pull',
      '--json',
      '--secret-file',
      secretFile,
      ...(blockSize !== undefined ? ['--block-size', String(blockSize)] : []),
      `127.0.0.1:${port}/${volume}`,
      image,
    ]);
  }

  /**
   * Start `resync serve` on an ephemeral port of 127.0.0.1 with one volume
   * (writable unless `mode` is `ro`), or several given as NAME=PATH pairs.
   */
  async serve(volume: string | readonly (readonly [string, string])[], path: string, secretFile: string, mode: 'rw' | 'ro' = 'rw'): Promise<ResyncServer> {
    const volumes = typeof volume === 'string' ? [[volume, path] as const] : volume;
    const proc = this.meter.start(this.command, [
      ...this.prefix,
      'serve',
      '--log-format',
      'json',
      '--listen',
      '127.0.0.1:0',
      ...volumes.flatMap(([name, p]) => ['--volume', `${name}=${p}:${mode}`]),
      '--secret-file',
      secretFile,
    ]);
    const port = await waitFor('resync serve to listen', proc, () => {
      const m = /listening on [^\s]*:(\d+)/.exec(proc.output().stderr);
      return Promise.resolve(m?.[1] !== undefined ? Number(m[1]) : undefined);
    });
    return {
      port,
      stop: async () => {
        await proc.signal('SIGTERM');
        return parseServerLog(await proc.wait());
      },
    };
  }
}
