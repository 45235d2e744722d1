/** `resync serve`, `push` and `pull`. */
import type { Argv } from 'yargs';
import { ParamError } from '../../core/errors.js';
import { loadServerConfig, parseRemote, readSecretFile, readTlsFiles, splitHostPort, type ServerConfig, type VolumeConfig } from '../../net/config.js';
// Loaded on first use: keeps start-up short for commands that do not need it.
const serverMod = () => import('../../net/server.js');
// Loaded on first use: keeps start-up short for commands that do not need it.
import type { ClientOptions, SyncResult } from '../../net/client.js';
import type { ProgressFn } from '../../api-files.js';
const clientMod = () => import('../../net/client.js');
import { parseSize } from '../args.js';
// Loaded on first use: keeps start-up short for commands that do not need it.
const dryRunMod = () => import('../../dry-run.js');
import { dryRunSummary, parseBwlimit } from './ops.js';
import { runCommand, type CommonArgs } from '../run.js';
import { resolve } from 'node:path';
import { readFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import type { ClientTls } from '../../net/connection.js';
import { ioError } from '../../io/errors.js';

async function clientTls(on: boolean, caFile: string | undefined): Promise<ClientTls | undefined> {
  if (!on && !caFile) return undefined;
  if (!caFile) return {};
  try {
    return { ca: await readFile(caFile) };
  } catch (e) {
    throw ioError(e, 'read CA certificate', caFile);
  }
}

/** Options push and pull share. */
const CLIENT_OPTIONS = {
  'secret-file': { type: 'string', describe: 'file holding the shared secret (or RESYNC_SECRET_FILE)' },
  tls: { type: 'boolean', default: false, describe: 'connect over TLS and verify the server certificate' },
  'tls-ca': { type: 'string', describe: 'PEM CA certificate to trust for --tls (default: the system store)' },
  'block-size': { alias: 'b', type: 'string' },
  'dry-run': { type: 'boolean', default: false, describe: 'report what would be sent; nothing is written on either side' },
  bwlimit: { type: 'string', describe: 'most bytes per second this side sends (e.g. 500K, 10M)' },
  timeout: { type: 'number', default: 300, describe: 'seconds of silence before giving up' },
  compress: { type: 'boolean', default: false, describe: 'compress literal data (raw DEFLATE) on the wire' },
} as const;

/** ClientOptions from the options push and pull share. */
async function clientOptionsFrom(
  argv: {
    remote: string;
    'secret-file'?: string | undefined;
    'block-size'?: string | undefined;
    timeout: number;
    bwlimit?: string | undefined;
    compress: boolean;
    tls: boolean;
    'tls-ca'?: string | undefined;
  },
  onProgress: ProgressFn,
): Promise<ClientOptions> {
  return {
    ...parseRemote(argv.remote),
    secret: await readSecretFile(secretFileArg(argv['secret-file'])),
    blockSize: argv['block-size'] ? parseSize(argv['block-size'], 'block size') : undefined,
    idleTimeoutMs: argv.timeout * 1000,
    bwlimit: parseBwlimit(argv.bwlimit),
    compress: argv.compress,
    tls: await clientTls(argv.tls, argv['tls-ca']),
    onProgress,
  };
}

/** A `recover` argument that names a remote volume (HOST:PORT/VOLUME) rather than a local image. */
export function isRemoteVolume(arg: string): boolean {
  return /^[^/\s]+:\d{1,5}\/[A-Za-z0-9._-]{1,128}$/.test(arg) && !existsSync(arg);
}

/** `resync recover HOST:PORT/VOLUME`: the server rolls back (or completes) the volume's unfinished update. */
export async function recoverRemoteCommand(argv: { image: string; 'secret-file'?: string | undefined; timeout: number; tls: boolean; 'tls-ca'?: string | undefined }): Promise<Record<string, unknown>> {
  const r = await (await clientMod()).recoverRemote({
    ...parseRemote(argv.image),
    secret: await readSecretFile(secretFileArg(argv['secret-file'])),
    idleTimeoutMs: argv.timeout * 1000,
    tls: await clientTls(argv.tls, argv['tls-ca']),
  });
  return { image: argv.image, outcome: r.outcome, imageSize: r.imageSize, verified: true };
}

function secretFileArg(v: string | undefined): string {
  const f = v ?? process.env.RESYNC_SECRET_FILE;
  if (!f) throw new ParamError('no shared secret: pass --secret-file FILE (or set RESYNC_SECRET_FILE); secrets are never taken on the command line');
  return f;
}

function summary(r: SyncResult): Record<string, unknown> {
  return {
    imageSize: r.imageSize,
    blockSize: r.blockSize,
    matchedBytes: r.matchedBytes,
    literalBytes: r.literalBytes,
    copyOps: r.copyOps,
    literalOps: r.literalOps,
    bytesSent: r.bytesSent,
    bytesReceived: r.bytesReceived,
    verified: r.verified,
    resumedFrom: r.resumedFrom,
    elapsedMs: r.elapsedMs,
  };
}

/** Parse repeated --volume NAME=PATH[:rw|:ro]. */
function parseVolumes(list: string[]): Record<string, VolumeConfig> {
  const out: Record<string, VolumeConfig> = {};
  for (const v of list) {
    const m = /^([A-Za-z0-9._-]{1,128})=(.+?)(?::(rw|ro))?$/.exec(v);
    if (!m) throw new ParamError(`--volume ${JSON.stringify(v)} must look like NAME=PATH[:rw|:ro]`);
    out[m[1]!] = { path: resolve(m[2]!), writable: m[3] === 'rw' };
  }
  return out;
}

/** Register the network commands. */
export function netCommands(y: Argv<CommonArgs>): Argv<CommonArgs> {
  return y
    .command(
      'serve',
      'Serve volumes (named images) to authenticated resync clients',
      (a) =>
        a
          .option('config', { alias: 'c', type: 'string', describe: 'JSON config file (listen, secretFile, volumes, limits)' })
          .option('listen', { type: 'string', describe: 'HOST:PORT to listen on (default 127.0.0.1:7873)' })
          .option('volume', { type: 'string', array: true, describe: 'NAME=PATH[:rw|:ro] (repeatable; default read-only)' })
          .option('secret-file', { type: 'string', describe: 'file holding the shared secret' })
          .option('tls-cert', { type: 'string', describe: 'PEM certificate: serve over TLS (with --tls-key)' })
          .option('tls-key', { type: 'string', describe: 'PEM private key for --tls-cert' })
          .option('max-sessions', { type: 'number', default: 16 })
          .option('idle-timeout', { type: 'number', default: 300, describe: 'seconds of silence before a session is dropped' }),
      (argv) =>
        runCommand('serve', argv, async () => {
          let cfg: ServerConfig;
          const listen = argv.listen ? splitHostPort(argv.listen) : undefined;
          if (argv.config) {
            cfg = await loadServerConfig(argv.config, {
              ...(listen ? { host: listen[0], port: listen[1] } : {}),
              ...(argv['secret-file'] ? { secretFile: argv['secret-file'] } : {}),
            });
          } else {
            const [host, port] = listen ?? ['127.0.0.1', 7873];
            cfg = {
              host,
              port,
              secret: await readSecretFile(secretFileArg(argv['secret-file'])),
              volumes: parseVolumes(argv.volume ?? []),
              maxSessions: argv['max-sessions'],
              idleTimeoutMs: argv['idle-timeout'] * 1000,
              handshakeTimeoutMs: 10_000,
            };
          }
          if (argv['tls-cert'] || argv['tls-key']) {
            if (!argv['tls-cert'] || !argv['tls-key']) throw new ParamError('--tls-cert and --tls-key go together');
            cfg.tls = await readTlsFiles(argv['tls-cert'], argv['tls-key']);
          }
          if (Object.keys(cfg.volumes).length === 0) throw new ParamError('no volumes to serve: use --volume NAME=PATH[:rw] or a config file');
          const server = new (await serverMod()).ResyncServer(cfg, (e) => {
            if (!argv.quiet) process.stderr.write(`${new Date().toISOString()} ${e.level} ${e.peer ?? ''} ${e.volume ?? ''} ${e.code ?? ''} ${e.msg}\n`);
          });
          const port = await server.listen();
          process.stderr.write(`resync serve: listening on ${cfg.host}:${port} with ${Object.keys(cfg.volumes).length} volume(s)\n`);
          await new Promise<void>((res) => {
            const stop = (): void => {
              void server.close().then(res);
            };
            process.once('SIGINT', stop);
            process.once('SIGTERM', stop);
          });
          return { sessions: server.sessionsDone };
        }),
    )
    .command(
      'push <image> <remote>',
      'Make the remote volume identical to the local IMAGE (primary -> recovery)',
      (a) =>
        a
          .positional('image', { type: 'string', demandOption: true })
          .positional('remote', { type: 'string', demandOption: true, describe: 'HOST:PORT/VOLUME' })
          .options(CLIENT_OPTIONS),
      (argv) =>
        runCommand('push', argv, async (progress) => {
          const opts = await clientOptionsFrom(argv, progress);
          if (argv['dry-run']) return dryRunSummary(await (await dryRunMod()).dryRunPush(argv.image, opts));
          const res = await (await clientMod()).push(argv.image, opts);
          return summary(res);
        }),
    )
    .command(
      'pull <remote> <image>',
      'Make the local IMAGE identical to the remote volume (failback: recovery -> primary)',
      (a) =>
        a
          .positional('remote', { type: 'string', demandOption: true, describe: 'HOST:PORT/VOLUME' })
          .positional('image', { type: 'string', demandOption: true })
          .option('in-place', { type: 'boolean', default: true, describe: 'patch IMAGE in place under an undo journal (resumable); --no-in-place writes a temp file and renames it' })
          .options(CLIENT_OPTIONS),
      (argv) =>
        runCommand('pull', argv, async (progress) => {
          const opts = await clientOptionsFrom(argv, progress);
          if (argv['dry-run']) return dryRunSummary(await (await dryRunMod()).dryRunPull(argv.image, opts));
          const res = await (await clientMod()).pull(argv.image, { ...opts, inPlace: argv['in-place'] });
          return summary(res);
        }),
    );
}
