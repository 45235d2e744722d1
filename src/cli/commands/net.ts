/** `resync serve`, `push` and `pull`. */
import type { Argv } from 'yargs';
import { isSyncError, ParamError, SyncError } from '../../core/errors.js';
import { exitCodeFor } from '../exit-codes.js';
import { checkVolumes, ConfigError, isLoopbackHost, parseRemote, readSecretFile, readServerConfig, readTlsFiles, splitHostPort, type ConfigProblem, type ServerConfig, type VolumeConfig } from '../../api/config.js';
// Loaded on first use: keeps start-up short for commands that do not need it.
const serverMod = () => import('../../api/net.js');
// Loaded on first use: keeps start-up short for commands that do not need it.
import type { ClientOptions, FanoutResult, SyncResult } from '../../api/client.js';
import type { ProgressFn } from '../../core/progress.js';
const clientMod = () => import('../../api/client.js');
import { CLIENT_OPTIONS, clientTls, intOption, parseBwlimit, secondsOption, secretFileArg } from '../options.js';
import { damagedHint, networkHint, NOTHING_TO_RECOVER } from '../hints.js';
import { checkInput, prepareOutput } from '../paths.js';
// Loaded on first use: keeps start-up short for commands that do not need it.
const dryRunMod = () => import('../../api/dry-run.js');
import { dryRunSummary } from '../render.js';
import { localInterrupted, outputOptions, runCommand, type CommonArgs, type Interruption } from '../run.js';
import { join, resolve } from 'node:path';
import { existsSync } from 'node:fs';
import { parseSshRemote, splitCommand } from '../../api/config.js';
import { isNbdUri } from '../../io/nbd/uri.js';
import { UNPROVED_DIRTY } from '../../io/dirty-marker.js';
import { movedMarkerPath } from '../../io/moved-marker.js';
import type { CodecName } from '../../../protocol/literal-codec.js';
import { checkPrivateSecret, lookupRemote, parseNamedRemote, type RemoteCommon } from '../client-config.js';

/** The client options as yargs gives them. */
interface ClientArgs {
  remote: string;
  'secret-file'?: string | undefined;
  'block-size'?: number | undefined;
  timeout?: number | undefined;
  bwlimit?: string | undefined;
  compress?: boolean | undefined;
  'compress-choice'?: string | undefined;
  'compress-level'?: number | undefined;
  tls?: boolean | undefined;
  'tls-ca'?: string | undefined;
  rsh?: string | undefined;
  'remote-resync'?: string | undefined;
}

/**
 * ClientOptions from the options push and pull share, over what a named
 * remote (@NAME/VOLUME) in the client config sets. `onNote` gets the notes
 * of the session (a codec fallen back to, a rollback the server did): the
 * command's, which keeps --quiet.
 */
export async function clientOptionsFrom(argv: ClientArgs, onProgress: ProgressFn, onNote?: (msg: string) => void): Promise<ClientOptions> {
  const named = parseNamedRemote(argv.remote) ? await lookupRemote(argv.remote) : null;
  const common = {
    blockSize: argv['block-size'],
    idleTimeoutMs: (argv.timeout ?? named?.timeout ?? 300) * 1000,
    bwlimit: parseBwlimit(argv.bwlimit ?? named?.bwlimit),
    ...(await compressionFrom(argv, named)),
    onProgress,
    onNote,
  };
  const viaSsh = named ? (named.kind === 'ssh' ? { host: named.ssh, path: join(named.dir, named.volume) } : null) : parseSshRemote(argv.remote);
  if (viaSsh) {
    // ssh authenticates both ends and encrypts: no shared secret, no TLS.
    if (argv.tls || argv['tls-ca']) throw new ParamError('--tls does not apply to an ssh remote (HOST:/path); ssh already encrypts the session');
    if (argv['secret-file']) throw new ParamError('--secret-file does not apply to an ssh remote (HOST:/path); ssh authenticates the peer');
    const cfg = named?.kind === 'ssh' ? named : undefined;
    return {
      ...common,
      host: viaSsh.host,
      port: 0,
      volume: viaSsh.path,
      secret: new Uint8Array(0),
      ssh: { rsh: splitCommand(argv.rsh ?? cfg?.rsh ?? 'ssh'), host: viaSsh.host, remoteResync: argv['remote-resync'] ?? cfg?.remoteResync ?? 'resync' },
    };
  }
  if (argv.rsh !== undefined || argv['remote-resync'] !== undefined) {
    throw new ParamError(`--rsh and --remote-resync need an ssh remote ([user@]host:/path); ${JSON.stringify(argv.remote)} is HOST:PORT/VOLUME`);
  }
  const tcp = named?.kind === 'tcp' ? named : undefined;
  return {
    ...common,
    ...(tcp ? { host: tcp.host, port: tcp.port, volume: tcp.volume } : parseRemote(argv.remote)),
    secret: await clientSecret(argv['secret-file'], tcp?.secretFile),
    tls: await clientTls(argv.tls ?? tcp?.tls ?? false, argv['tls-ca'] ?? (argv.tls === false ? undefined : tcp?.tlsCa)),
  };
}

/** The shared secret: --secret-file, else the remote's secretFile (which must be private), else RESYNC_SECRET_FILE. */
export async function clientSecret(flag: string | undefined, fromConfig: string | undefined): Promise<Uint8Array> {
  if (flag === undefined && fromConfig !== undefined) {
    await checkPrivateSecret(fromConfig);
    return readSecretFile(fromConfig);
  }
  const warnings: string[] = [];
  const secret = await readSecretFile(secretFileArg(flag), warnings);
  for (const w of warnings) process.stderr.write(`resync: warning: ${w}\n`);
  return secret;
}

/**
 * --compress, --compress-choice and --compress-level over a named remote's
 * compress, compressChoice and compressLevel: a choice or level implies
 * compression unless --no-compress (or "compress": false) says otherwise.
 */
async function compressionFrom(argv: ClientArgs, named: RemoteCommon | null): Promise<Pick<ClientOptions, 'compress' | 'compressChoice' | 'compressLevel'>> {
  const choice = argv['compress-choice'] ?? named?.compressChoice;
  const level = argv['compress-level'] ?? named?.compressLevel;
  const on = argv.compress ?? (argv['compress-choice'] !== undefined || argv['compress-level'] !== undefined ? true : (named?.compress ?? (choice !== undefined || level !== undefined)));
  if (!on) return { compress: false };
  const name = choice === undefined ? null : (choice as CodecName);
  // (Loaded here: the codecs bring zlib, which other commands do without.)
  if (name && level !== undefined) (await import('../../../protocol/literal-codec.js')).checkLevel(name, level);
  return { compress: true, compressChoice: name, compressLevel: level };
}

/** A `recover` argument that names a remote volume (HOST:PORT/VOLUME, [user@]host:/path or @NAME[/VOLUME]) rather than a local image. */
export function isRemoteVolume(arg: string): boolean {
  return (/^[^/\s]+:\d{1,5}\/[A-Za-z0-9._-]{1,128}$/.test(arg) || parseSshRemote(arg) !== null || arg.startsWith('@')) && !existsSync(arg);
}

/** What to run after a pull was cut: into an NBD export it starts over (net/nbd.ts), into a file it resumes. */
const pullAgain = (image: string): string => (isNbdUri(image) ? 'run the same pull again' : 'run the same pull again to resume it');

/**
 * After a failed pull: where the local image was left mid-update under its
 * journal (a connection cut, a full disk), say so and both ways out, as a
 * SIGINT does; otherwise nothing to add.
 */
function pullLeft(argv: { image: string; 'dry-run': boolean; 'in-place': boolean; 'state-dir'?: string | undefined }): string | undefined {
  if (argv['dry-run']) return undefined;
  const left = localInterrupted(argv.image, '', pullAgain(argv.image), argv['state-dir']);
  if (left.state === 'journaled') return `${left.message}: ${left.resume}`;
  return movedPullCut(argv.image, argv['in-place']) ? `${argv.image} was not changed; ${MOVED_PULL_CUT}: run the same pull again` : undefined;
}

/** `resync recover REMOTE`: the server (or `serve --stdio` over ssh) rolls back (or completes) the volume's unfinished update. */
export async function recoverRemoteCommand(argv: Omit<ClientArgs, 'remote'> & { image: string }): Promise<Record<string, unknown>> {
  const opts = await clientOptionsFrom({ ...argv, remote: argv.image }, () => undefined);
  const r = await (await clientMod()).recoverRemote({ ...opts, compress: false, bwlimit: undefined });
  return {
    image: argv.image,
    outcome: r.outcome,
    imageSize: r.imageSize,
    ...(r.removed ? { removed: true } : {}),
    verified: r.proved !== false,
    ...(r.proved === false ? { note: UNPROVED_DIRTY } : r.outcome === 'nothing' ? { note: NOTHING_TO_RECOVER.replace('the image', 'the volume') } : {}),
  };
}

/**
 * A pull into `image` that went on in a temp file was cut (io/moved-marker.ts):
 * that temp file is gone and the next pull stays in place.
 */
function movedPullCut(image: string, inPlace: boolean): boolean {
  return inPlace && !isNbdUri(image) && existsSync(movedMarkerPath(image));
}

const MOVED_PULL_CUT = 'a pull into it that went on in a temp file (now removed) was cut, so the next pull stays in place, so that a cut from then on resumes it';

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
    compression: r.compression,
    elapsedMs: r.elapsedMs,
    // A dirty-bitmap push (net/dirty.ts): what the bitmap marked, what was read, and what was verified (the dirty blocks or the whole image).
    ...(r.dirtyBytes !== undefined ? { dirtyBytes: r.dirtyBytes, bytesRead: r.bytesRead, verifiedScope: r.verifiedScope } : {}),
    // What a killed earlier pull (into an NBD export), or push (into a server's NBD export volume), left and was settled first.
    ...(r.recovered ? { recovered: r.recovered } : {}),
    ...(r.rolledBack ? { rolledBack: r.rolledBack } : {}),
  };
}

/** What an interrupted push leaves: the volume on the server, under its journal if the delta had started. */
function pushInterrupted(argv: { remote: string[]; 'dry-run': boolean }): Interruption {
  const target = argv.remote.join(' ');
  if (argv['dry-run']) return { target, state: 'unchanged', message: 'a dry run writes nothing' };
  const several = argv.remote.length > 1;
  return {
    target,
    state: 'unknown',
    message: several
      ? `each of the volumes ${argv.remote.join(', ')} is unchanged, updated, or mid-update under its server's undo journal (consistent either way)`
      : `the volume ${target} is unchanged, or mid-update under the server's undo journal if the delta had started (consistent either way)`,
    // A file volume resumes from its journal; an NBD volume's server rolls the export back and the push starts over.
    resume: `run the same push again: it resumes a file volume where it stopped, or rolls an NBD export volume back and starts over (the server${several ? 's refuse pulls of a volume' : ' refuses pulls of the volume'} until then)`,
  };
}

/**
 * ClientOptions for each remote of a push to several. One --secret-file
 * serves every HOST:PORT/VOLUME remote and --tls applies to those only;
 * --rsh and --remote-resync to the ssh ones only.
 */
async function replicaOptions(
  argv: Parameters<typeof clientOptionsFrom>[0] & { remote: string; remotes: string[] },
  onProgress: ProgressFn,
  onNote: (msg: string) => void,
): Promise<{ remote: string; opts: ClientOptions }[]> {
  const seen = new Set<string>();
  for (const r of argv.remotes) {
    if (seen.has(r)) throw new ParamError(`remote ${JSON.stringify(r)} is given twice`);
    seen.add(r);
  }
  const ssh = argv.remotes.map((r) => parseSshRemote(r) !== null);
  const mixed = ssh.includes(true) && ssh.includes(false);
  const out: { remote: string; opts: ClientOptions }[] = [];
  for (const [k, remote] of argv.remotes.entries()) {
    const a = { ...argv, remote };
    if (mixed && ssh[k]) Object.assign(a, { 'secret-file': undefined, tls: false, 'tls-ca': undefined });
    if (mixed && !ssh[k]) Object.assign(a, { rsh: undefined, 'remote-resync': undefined });
    out.push({ remote, opts: await clientOptionsFrom(a, onProgress, onNote) });
  }
  return out;
}

/**
 * The summary of a push to several replicas (docs/json.md): the image, the
 * shared read and one entry per replica. Throws when any failed: ERR_PARTIAL
 * (exit 12) if some were updated, else the first failure's code, with the
 * report in its details so every replica is still reported.
 */
export function replicasSummary(r: FanoutResult, hint: (e: unknown, remote: string) => string | undefined): Record<string, unknown> {
  const replicas = r.replicas.map((o) => {
    if (o.ok) return { remote: o.remote, ok: true, ...summary(o.result), bytesWritten: o.result.bytesWritten, sharedRead: o.sharedRead, sharedScan: o.sharedScan };
    const e = o.error;
    const h = hint(e, o.remote);
    return {
      remote: o.remote,
      ok: false,
      code: isSyncError(e) ? e.code : 'ERR_INTERNAL',
      message: (e instanceof Error ? e.message : String(e)).replace(/\s*\n\s*/g, ' '),
      exitCode: exitCodeFor(e),
      ...(h ? { hint: h } : {}),
      elapsedMs: o.elapsedMs,
    };
  });
  const report = { imageSize: r.imageSize, sharedReadBytes: r.read?.sharedBytes, hashPasses: r.hashPasses, deltaScans: r.scans.scans, elapsedMs: r.elapsedMs, replicas };
  const failed = r.replicas.filter((o) => !o.ok);
  if (failed.length === 0) return report;
  const what = failed.map((o) => `${o.remote} (${isSyncError((o as { error: unknown }).error) ? ((o as { error: SyncError }).error.code) : 'ERR_INTERNAL'})`).join(', ');
  if (failed.length < r.replicas.length) {
    throw new SyncError('ERR_PARTIAL', `${failed.length} of ${r.replicas.length} replicas failed: ${what}; the others were updated and verified`, { report });
  }
  const first = (failed[0] as { error: unknown }).error;
  const code = isSyncError(first) ? first.code : 'ERR_INTERNAL';
  if (code === 'ERR_INTERNAL') throw first;
  throw new SyncError(code, `every replica failed: ${what}; first: ${first instanceof Error ? first.message : String(first)}`, { report });
}

/**
 * Parse repeated --volume NAME=PATH[:rw|:ro]. A suffix that looks like a mode
 * but is not one (`:wr`, `:RW`) is refused rather than taken as part of the
 * path, which would quietly serve a missing read-only volume. PATH may be an
 * NBD URI (nbd://HOST[:PORT]/EXPORT, nbd+unix:///EXPORT?socket=/PATH, or nbds:// and nbds+unix:// over TLS), taken
 * as it is: checkVolumes checks it.
 */
export function parseVolumes(list: string[]): Record<string, VolumeConfig> {
  const out: Record<string, VolumeConfig> = {};
  const problems: ConfigProblem[] = [];
  for (const v of list) {
    const m = /^([A-Za-z0-9._-]{1,128})=(.+?)(?::(rw|ro))?$/.exec(v);
    if (!m) {
      problems.push({ where: `--volume ${v}`, message: 'must look like NAME=PATH[:rw|:ro]' });
      continue;
    }
    const name = m[1]!;
    const odd = m[3] === undefined ? /:([A-Za-z]{1,5})$/.exec(m[2]!) : null;
    if (odd) problems.push({ where: `--volume ${name}`, message: `unknown mode ":${odd[1]}" (use :rw for writable, :ro or nothing for read-only)` });
    else if (Object.hasOwn(out, name)) problems.push({ where: `--volume ${name}`, message: 'given twice' });
    else out[name] = { path: isNbdUri(m[2]!) ? m[2]! : resolve(m[2]!), writable: m[3] === 'rw' };
  }
  if (problems.length > 0) throw new ConfigError('', problems);
  return out;
}

/** `serve --stdio`: one preauthenticated session on stdin/stdout; logs on stderr (warnings and errors unless --log-level). */
async function serveStdio(argv: {
  allow?: string[] | undefined;
  'read-only': boolean;
  config?: string | undefined;
  listen?: string | undefined;
  volume?: string[] | undefined;
  'secret-file'?: string | undefined;
  'tls-cert'?: string | undefined;
  'tls-key'?: string | undefined;
  'state-dir'?: string | undefined;
  'idle-timeout': number;
  'log-format'?: string | undefined;
  'log-level'?: string | undefined;
}): Promise<Record<string, unknown>> {
  for (const [flag, v] of [['--config', argv.config], ['--listen', argv.listen], ['--volume', argv.volume], ['--secret-file', argv['secret-file']], ['--tls-cert', argv['tls-cert']], ['--tls-key', argv['tls-key']], ['--state-dir', argv['state-dir']]] as const) {
    if (v !== undefined) throw new ParamError(`${flag} does not apply to --stdio (ssh authenticates the peer, and the client names the image path; restrict it with --allow DIR)`);
  }
  const { realAllowDirs } = await import('../../api/net.js');
  const allow = argv.allow ? await realAllowDirs(argv.allow) : null;
  const logMod = await import('../log.js');
  const log = logMod.makeLogger((argv['log-format'] ?? (process.stderr.isTTY ? 'text' : 'json')) as 'json' | 'text', (argv['log-level'] ?? 'warn') as (typeof logMod.LOG_LEVELS)[number]);
  const cfg: ServerConfig = { host: '', port: 0, secret: Buffer.alloc(0), volumes: {}, maxSessions: 1, idleTimeoutMs: argv['idle-timeout'] * 1000, handshakeTimeoutMs: 30_000 };
  const server = new (await serverMod()).ResyncServer(cfg, (e) => logMod.logEvent(log, e));
  const stream = (await serverMod()).stdioDuplex();
  const peer = process.env.SSH_CLIENT?.split(' ').slice(0, 2).join(':') || 'stdio';
  try {
    await server.serveStream(stream, peer, { allow, readOnly: argv['read-only'] });
  } finally {
    stream.destroy();
  }
  return { sessions: server.sessionsDone };
}

/** Register the network commands. */
export function netCommands(y: Argv<CommonArgs>): Argv<CommonArgs> {
  return y
    .command(
      'serve',
      'Serve volumes (named images) to authenticated resync clients',
      (a) =>
        outputOptions(a, { json: false, progress: false })
          .option('config', { alias: 'c', type: 'string', describe: 'JSON config file (listen, secretFile, volumes, limits); see docs/user-guide.md' })
          .option('listen', { type: 'string', describe: 'HOST:PORT to listen on (default 127.0.0.1:7873)' })
          .option('volume', { type: 'string', array: true, describe: 'NAME=PATH[:rw|:ro] (repeatable; default read-only); PATH a file, a block device, or an NBD export (nbd://HOST:PORT/EXPORT, nbd+unix:///EXPORT?socket=/PATH)' })
          .option('state-dir', { type: 'string', describe: "where NBD volumes' undo journals and locks are kept (default $XDG_STATE_HOME/resync or ~/.local/state/resync)" })
          .option('secret-file', { type: 'string', describe: 'file holding the shared secret (at least 16 bytes; clients give the same file)' })
          .option('tls-cert', { type: 'string', describe: 'PEM certificate: serve over TLS (with --tls-key)' })
          .option('tls-key', { type: 'string', describe: 'PEM private key for --tls-cert' })
          .option('max-sessions', { requiresArg: true, coerce: intOption('max-sessions', 1, 4096), default: 16, describe: 'most sessions served at once; more are refused with ERR_BUSY' })
          .option('idle-timeout', { requiresArg: true, coerce: secondsOption('idle-timeout'), default: 300, describe: 'seconds of silence before a session is dropped' })
          .option('log-format', { type: 'string', choices: ['json', 'text'], describe: 'log lines on stderr: JSON objects, or text (default: text on a terminal, else json)' })
          .option('log-level', { type: 'string', choices: ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'], describe: 'least severe level logged (default info; warn with --quiet)' })
          .option('stdio', { type: 'boolean', default: false, describe: 'serve one session on stdin/stdout, the peer already authenticated (run by ssh; no secret); the client names the image path' })
          .option('allow', { type: 'string', array: true, describe: 'with --stdio: serve only images under DIR (repeatable; symbolic links and .. resolved first)' })
          .option('read-only', { type: 'boolean', default: false, describe: 'with --stdio: refuse pushes' })
          .option('shutdown-grace', { requiresArg: true, coerce: secondsOption('shutdown-grace'), default: 20, describe: 'seconds SIGTERM/SIGINT lets running sessions finish before they are cut off (they resume later)' })
          .example('$0 serve --secret-file S --volume vm1=/srv/vm1.img:rw', 'serve one writable volume on 127.0.0.1:7873')
          .example('$0 serve -c /etc/resync/server.json', 'serve what a config file lists')
          .example("$0 serve --secret-file S --volume 'vm1=nbd+unix:///vm1?socket=/run/vm1.sock:rw'", 'serve the qcow2 disk qemu-nbd exports there: pushes patch it in place under an undo journal')
          .example('$0 serve --stdio --allow /srv/images', 'as a forced command in authorized_keys: serve push and pull over ssh under /srv/images'),
      (argv) =>
        runCommand('serve', { json: false, progress: false, quiet: true }, async () => {
          if (argv.stdio) return serveStdio(argv);
          if (argv.allow !== undefined || argv['read-only']) throw new ParamError('--allow and --read-only go with --stdio');
          let cfg: ServerConfig;
          const warnings: string[] = [];
          const listen = argv.listen ? splitHostPort(argv.listen) : undefined;
          if (argv.config) {
            // Not merged: which of the two would define a volume named in both? The config lists them all.
            if (argv.volume !== undefined) throw new ParamError('--volume does not go with --config: list the volumes in the config file');
            const loaded = await readServerConfig(argv.config, {
              ...(listen ? { host: listen[0], port: listen[1] } : {}),
              ...(argv['secret-file'] ? { secretFile: argv['secret-file'] } : {}),
              ...(argv['state-dir'] ? { stateDir: resolve(argv['state-dir']) } : {}),
            });
            cfg = loaded.config;
            warnings.push(...loaded.warnings);
          } else {
            const [host, port] = listen ?? ['127.0.0.1', 7873];
            const volumes = parseVolumes(argv.volume ?? []);
            if (Object.keys(volumes).length === 0) throw new ParamError('no volumes to serve: use --volume NAME=PATH[:rw] or a config file');
            const stateDir = argv['state-dir'] !== undefined ? resolve(argv['state-dir']) : undefined;
            const vc = await checkVolumes(volumes, (n) => `--volume ${n}`, { stateDir });
            if (vc.problems.length > 0) throw new ConfigError('', vc.problems);
            warnings.push(...vc.warnings);
            cfg = {
              host,
              port,
              secret: await readSecretFile(secretFileArg(argv['secret-file']), warnings),
              volumes,
              maxSessions: argv['max-sessions'],
              idleTimeoutMs: argv['idle-timeout'] * 1000,
              handshakeTimeoutMs: 10_000,
              stateDir,
            };
          }
          if (argv['tls-cert'] || argv['tls-key']) {
            if (!argv['tls-cert'] || !argv['tls-key']) throw new ParamError('--tls-cert and --tls-key go together');
            cfg.tls = await readTlsFiles(argv['tls-cert'], argv['tls-key']);
          }
          const logMod = await import('../log.js');
          const format = (argv['log-format'] ?? (process.stderr.isTTY ? 'text' : 'json')) as 'json' | 'text';
          const level = (argv['log-level'] ?? (argv.quiet ? 'warn' : 'info')) as (typeof logMod.LOG_LEVELS)[number];
          const log = logMod.makeLogger(format, level);
          // --quiet keeps the session events to warnings, not the start and stop lines
          // (scripts wait for "listening on"); only --log-level filters those.
          const life = argv['log-level'] ? log : log.child({}, { level: 'info' });
          // Past the loopback, plain TCP leaves everything after the handshake open to the path.
          if (!cfg.tls && !isLoopbackHost(cfg.host)) {
            warnings.push(`listening on ${cfg.host} without TLS: images cross the network unencrypted, and unprotected against changes after the handshake; serve with --tls-cert and --tls-key, or through a tunnel, where the network is not trusted (docs/security.md)`);
          }
          for (const w of warnings) log.warn(w);
          const server = new (await serverMod()).ResyncServer(cfg, (e) => logMod.logEvent(/^(shutting down|stopped)/.test(e.msg) ? life : log, e));
          const port = await server.listen();
          life.info({ host: cfg.host, port, volumes: Object.keys(cfg.volumes), tls: cfg.tls !== undefined }, `listening on ${cfg.host.includes(':') ? `[${cfg.host}]` : cfg.host}:${port} with ${Object.keys(cfg.volumes).length} volume(s)`);
          // The configuration is read once: a SIGHUP (a reload, to most daemons) is said to change nothing, not taken for a stop.
          const onHangup = (): void => life.warn({ signal: 'SIGHUP' }, 'SIGHUP ignored: the configuration is read only at start; restart the server to apply a change (SIGTERM stops it gracefully)');
          process.on('SIGHUP', onHangup);
          const signal = await new Promise<NodeJS.Signals>((res) => {
            process.once('SIGINT', () => res('SIGINT'));
            process.once('SIGTERM', () => res('SIGTERM'));
          });
          life.info({ signal }, `${signal}: stopping`);
          // A second signal cuts the grace period short.
          let cut: () => void = () => undefined;
          const again = new Promise<void>((r) => (cut = r));
          process.once('SIGINT', () => cut());
          process.once('SIGTERM', () => cut());
          const grace = Math.max(0, argv['shutdown-grace']) * 1000;
          const report = await server.shutdown(grace, again);
          // What it did is in the log's last record ("stopped"); nothing is printed on stdout.
          return { sessions: server.sessionsDone, ...report };
        }, undefined, false),
    )
    .command(
      'push <image> <remote..>',
      'Make the remote volume (or several replicas at once) identical to the local IMAGE (primary -> recovery)',
      (a) =>
        outputOptions(a)
          .positional('image', { type: 'string', demandOption: true, describe: 'the local image to send (file, block device, or NBD export: nbd://HOST:PORT/EXPORT, nbd+unix:///EXPORT?socket=PATH; over TLS nbds://HOST:PORT/EXPORT?tls-certificates=DIR)' })
          .positional('remote', { type: 'string', demandOption: true, array: true, describe: 'HOST:PORT/VOLUME, [user@]host:/path over ssh, or @NAME[/VOLUME] from the client config; several: each is updated from one read of IMAGE' })
          .options(CLIENT_OPTIONS)
          .option('dirty-bitmap', {
            type: 'string',
            describe: 'with an NBD image: send only the blocks this qemu dirty bitmap marks (exported as qemu:dirty-bitmap:NAME); verifies those blocks, and the whole image where the digest cache and the server allow',
          })
          .option('state-dir', { type: 'string', describe: "where the signature spec each replica took last is remembered (a hint that speeds up the next push), and with an NBD image its block digests per replica and its undo journal if a pull into it was killed (default $XDG_STATE_HOME/resync or ~/.local/state/resync)" })
          .option('digest-cache', { type: 'boolean', default: true, describe: "with an NBD image: keep the export's block digests after a verified push so that a --dirty-bitmap push verifies the whole image; --no-digest-cache: keep none" })
          .example('$0 push vm1.img dr:7873/vm1', 'bring volume vm1 on host dr up to date (secret: --secret-file or RESYNC_SECRET_FILE)')
          .example("$0 push -e 'ssh -p 2222' vm1.img root@dr:/srv/images/vm1.img", 'the same over ssh: resync serve --stdio runs on dr')
          .example('$0 push --dry-run vm1.img dr:7873/vm1', 'how much would be sent; nothing is written')
          .example("$0 push 'nbd+unix:///vm1?socket=/run/vm1.sock' dr:7873/vm1", 'send the guest-visible content of a disk exported by qemu-nbd or qemu')
          .example('$0 push vm1.img @dr-site/vm1', 'to volume vm1 of remote dr-site in ~/.config/resync/config.json (or $RESYNC_CONFIG)')
          .example('$0 push vm1.img dr1:7873/vm1 dr2:7873/vm1', 'two replicas from one read of vm1.img; exit 12 if only some were updated'),
      (argv) =>
        runCommand(
          'push',
          argv,
          async (progress) => {
            await checkInput(argv.image, 'IMAGE');
            const remotes = argv.remote.map(String);
            // A server that rolled back an unfinished earlier push into its volume says so (Ready).
            const note = (msg: string): void => void (argv.quiet ? undefined : process.stderr.write(`resync push: note: ${msg}\n`));
            if (remotes.length > 1) {
              if (argv['dry-run']) throw new ParamError('--dry-run takes one remote; run it once per replica');
              if (argv['dirty-bitmap'] !== undefined || isNbdUri(argv.image)) throw new ParamError('a push from an NBD export (or with --dirty-bitmap) takes one remote; run it once per replica');
              const replicas = await replicaOptions({ ...argv, remote: remotes[0]!, remotes }, progress, note);
              return replicasSummary(await (await clientMod()).pushToReplicas(argv.image, replicas, { onProgress: progress }), networkHint);
            }
            const opts = await clientOptionsFrom({ ...argv, remote: remotes[0]! }, progress, note);
            if (argv['dry-run'] && argv['dirty-bitmap'] !== undefined) throw new ParamError('--dry-run does not apply to --dirty-bitmap (the bitmap says what would be read)');
            if (argv['dry-run']) return dryRunSummary(await (await dryRunMod()).dryRunPush(argv.image, { ...opts, stateDir: argv['state-dir'] }));
            const mod = await clientMod();
            const stateDir = argv['state-dir'] ?? mod.defaultStateDir();
            const res = await mod.push(argv.image, { ...opts, dirtyBitmap: argv['dirty-bitmap'], stateDir, digestCache: argv['digest-cache'] });
            return summary(res);
          },
          (e) => (argv.remote.length === 1 ? networkHint(e, String(argv.remote[0])) : undefined),
          () => pushInterrupted({ remote: argv.remote.map(String), 'dry-run': argv['dry-run'] }),
        ),
    )
    .command(
      'pull <remote> <image>',
      'Make the local IMAGE identical to the remote volume (failback: recovery -> primary)',
      (a) =>
        outputOptions(a)
          .positional('remote', { type: 'string', demandOption: true, describe: 'HOST:PORT/VOLUME, [user@]host:/path over ssh, or @NAME[/VOLUME] from the client config' })
          .positional('image', { type: 'string', demandOption: true, describe: 'the local image to update or create (file, block device, or NBD export URI: patched in place, flushed)' })
          .option('in-place', { type: 'boolean', default: true, describe: 'patch IMAGE in place under an undo journal (resumable); --no-in-place writes a temp file and renames it' })
          .option('sig-cache', { type: 'boolean', default: true, describe: "keep the image's block sums beside it (IMAGE.resync-sig) after a pull, so the next pull's signature does not read the whole image; --no-sig-cache: read it every time" })
          .option('temp-fallback', { type: 'boolean', default: true, describe: 'in place, switch to a temp file (renamed after verification) when the data turns out to have moved and there is room; --no-temp-fallback: in place always' })
          .option('state-dir', { type: 'string', describe: "with an NBD export: where its undo journal is kept while the pull writes it, and a killed pull's is found and rolled back (default $XDG_STATE_HOME/resync or ~/.local/state/resync)" })
          .options(CLIENT_OPTIONS)
          .example('$0 pull dr:7873/vm1 vm1.img', 'failback: make vm1.img equal to volume vm1 on host dr (secret: --secret-file or RESYNC_SECRET_FILE)')
          .example('$0 pull --no-in-place dr:7873/vm1 new.img', 'write a new file, renamed into place after verification')
          .example('$0 pull root@dr:/srv/images/vm1.img vm1.img', 'failback over ssh'),
      (argv) =>
        runCommand(
          'pull',
          argv,
          async (progress) => {
            await checkInput(argv.image, 'IMAGE');
            // A temp file renamed over a symbolic link would replace the link: write the file it points to.
            const image = argv['in-place'] || argv['dry-run'] || isNbdUri(argv.image) ? argv.image : await prepareOutput(argv.image, 'IMAGE', { force: true, inputs: [], usage: 'resync pull REMOTE IMAGE' });
            const note = (msg: string): void => void (argv.quiet ? undefined : process.stderr.write(`resync pull: note: ${msg}\n`));
            const opts = await clientOptionsFrom(argv, progress, note);
            if (argv['dry-run']) return dryRunSummary(await (await dryRunMod()).dryRunPull(image, { ...opts, stateDir: argv['state-dir'] }));
            const res = await (await clientMod()).pull(image, {
              ...opts,
              inPlace: argv['in-place'],
              tempFallback: argv['temp-fallback'],
              sigCache: argv['sig-cache'],
              stateDir: argv['state-dir'],
            });
            return summary(res);
          },
          // Refused because another session holds the image: its journal is that session's, live; nothing to advise.
          (e) => networkHint(e, argv.remote) ?? damagedHint(e) ?? (isSyncError(e) && e.code === 'ERR_LOCKED' ? undefined : pullLeft(argv)),
          () =>
            argv['dry-run']
              ? { target: argv.image, state: 'unchanged', message: 'a dry run writes nothing' }
              : localInterrupted(argv.image, isNbdUri(argv.image) ? 'what the pull wrote, if anything, was put back' : !argv['in-place'] ? 'its partial temp file was removed' : movedPullCut(argv.image, true) ? MOVED_PULL_CUT : 'the update had not started', pullAgain(argv.image), argv['state-dir']),
        ),
    );
}
