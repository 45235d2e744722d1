/** `resync verify`, and the dry-run summary push, pull and delta share. */
import type { Argv } from 'yargs';
import { ParamError } from '../../core/errors.js';
import { parseRemote } from '../../api/config.js';
// Loaded on first use: keeps start-up short for commands that do not need it.
import type { VerifyReport } from '../../api/verify.js';
const verifyMod = () => import('../../api/verify.js');
// Loaded on first use: keeps start-up short for commands that do not need it.
const dryRunMod = () => import('../../api/dry-run.js');
import type { ProgressFn } from '../../core/progress.js';
import { clientTls, intOption, parseBwlimit, READ_STATE_DIR_OPTION, secondsOption, sizeOption } from '../options.js';
import { networkHint } from '../hints.js';
import { checkInput } from '../paths.js';
import { ExitCode } from '../exit-codes.js';
import { existsSync } from 'node:fs';
import { dryRunSummary, fmtBytes } from '../render.js';
import { outputOptions, runCommand, type CommonArgs } from '../run.js';

/** Exit code of `resync verify` when the images differ (docs/exit-codes.md). */
export const EXIT_DIFFERENT = ExitCode.DIFFERENT;

/** Ranges listed in a human summary (--json lists up to --max-ranges). */
const HUMAN_RANGES = 20;

/** HOST:PORT/VOLUME (IPv6 in brackets); anything else is a local path. Prefix a path with ./ to force a file. */
const REMOTE_RE = /^(?:\[[^\]]+\]|[^/:[\]]+):\d{1,5}\/[A-Za-z0-9._-]{1,128}$/;

/** True if `s` names a remote volume rather than a local image. */
export function isRemoteSpec(s: string): boolean {
  return REMOTE_RE.test(s);
}


/** `delta --dry-run`: the summary of what the delta would hold (resync format only). */
export async function dryRunDeltaCommand(sigPath: string, newPath: string, format: string, compress: boolean, onProgress: ProgressFn, stateDir?: string): Promise<Record<string, unknown>> {
  if (format !== 'resync') throw new ParamError('--dry-run works with the resync format only');
  return dryRunSummary(await (await dryRunMod()).dryRunDelta(sigPath, newPath, { compress, onProgress, stateDir }));
}

function verifySummary(r: VerifyReport, json: boolean, extra: Record<string, unknown>): Record<string, unknown> {
  const base = {
    identical: r.identical,
    sizeA: r.sizeA,
    sizeB: r.sizeB,
    blockSize: r.blockSize,
    differingBytes: r.differingBytes,
    rangeCount: r.rangeTotal,
    truncated: r.truncated,
    ...extra,
  };
  if (json) return { ...base, ranges: r.ranges };
  // Sizes that differ by a few bytes would print alike rounded: give the bytes.
  const exact = (n: number): string => (fmtBytes(n).endsWith(' B') ? fmtBytes(n) : `${fmtBytes(n)} (${n} bytes)`);
  const sizes = r.sizeA !== r.sizeB ? { sizeA: exact(r.sizeA), sizeB: exact(r.sizeB) } : {};
  const shown = r.ranges.slice(0, HUMAN_RANGES).map((x) => `${x.offset}+${x.length} (${fmtBytes(x.length)})`);
  // --json lists what --max-ranges let through; past that, only a larger --max-ranges shows more.
  const listed = r.truncated ? `the first ${r.ranges.length} listed; a larger --max-ranges lists more` : '--json lists them';
  const more = r.ranges.length > HUMAN_RANGES || r.truncated ? ` ... (${r.rangeTotal} in all; ${listed})` : '';
  return { ...base, ...sizes, ranges: r.ranges.length === 0 ? 'none' : `\n    ${shown.join('\n    ')}${more}` };
}

/** Register `verify`. */
export function opsCommands(y: Argv<CommonArgs>): Argv<CommonArgs> {
  return y.command(
    'verify <A> <B>',
    `Compare two images block by block and list the byte ranges that differ; writes nothing. B may be HOST:PORT/VOLUME. Exit status 0: identical, ${EXIT_DIFFERENT}: different`,
    (a) =>
      outputOptions(a)
        .positional('A', { type: 'string', demandOption: true, describe: 'local image (file, block device, or NBD export: nbd://HOST:PORT/EXPORT, nbd+unix:///EXPORT?socket=PATH)' })
        .positional('B', { type: 'string', demandOption: true, describe: 'local image, or HOST:PORT/VOLUME, [user@]host:/path or @NAME[/VOLUME] (prefix a path with ./ to force a file)' })
        .option('block-size', { alias: 'b', type: 'string', coerce: sizeOption('block-size'), describe: 'comparison granularity (e.g. 4K); default: the block size a sync would use' })
        .option('max-ranges', { requiresArg: true, coerce: intOption('max-ranges', 1, 10_000_000), default: 10_000, describe: 'most ranges listed (the byte count stays exact)' })
        .option('secret-file', { type: 'string', describe: 'file holding the shared secret (remote B; or RESYNC_SECRET_FILE)' })
        .option('bwlimit', { type: 'string', describe: 'most bytes per second each way, as rsync: KiB/s as a bare number, or e.g. 500K, 10M (0: no limit)' })
        .option('tls', { type: 'boolean', describe: 'connect over TLS and verify the server certificate (remote B)' })
        .option('tls-ca', { type: 'string', describe: 'PEM CA certificate to trust for --tls (default: the system store)' })
        .option('timeout', { requiresArg: true, coerce: secondsOption('timeout'), describe: 'seconds of silence before giving up (remote B; default 300)' })
        .option('rsh', { alias: 'e', type: 'string', requiresArg: true, describe: 'ssh command when B is [user@]host:/path (default: ssh)' })
        .option('remote-resync', { type: 'string', requiresArg: true, describe: 'command that runs resync on the far side of ssh (default: resync)' })
        .option('state-dir', READ_STATE_DIR_OPTION)
        .example('$0 verify primary.img recovery.img', 'list the byte ranges where two local images differ')
        .example('$0 verify vm1.img dr:7873/vm1', 'compare with a remote volume; only block sums cross the network')
        .example('$0 verify vm1.img @dr-site/vm1', 'the same with a remote named in the client config'),
    async (argv) => {
      let differ = false;
      await runCommand(
        'verify',
        argv,
        async (progress) => {
          const blockSize = argv['block-size'];
          if (argv.B.startsWith('@') && !existsSync(argv.B)) {
            // A named remote from the client config, its settings under the flags.
            await checkInput(argv.A, 'A');
            const opts = await (await import('./net.js')).clientOptionsFrom({ ...argv, remote: argv.B, compress: false }, progress);
            const r = await (await verifyMod()).verifyRemote(argv.A, { ...opts, maxRanges: argv['max-ranges'], stateDir: argv['state-dir'] });
            differ = !r.identical;
            return verifySummary(r, argv.json, { remote: argv.B, bytesSent: r.bytesSent, bytesReceived: r.bytesReceived, elapsedMs: r.elapsedMs });
          }
          // [user@]host:/path is compared over ssh unless a local file has that name.
          const { parseSshRemote, splitCommand } = await import('../../api/config.js');
          const viaSsh = !isRemoteSpec(argv.B) && !existsSync(argv.B) ? parseSshRemote(argv.B) : null;
          if (viaSsh) {
            if (argv['secret-file'] !== undefined || argv.tls || argv['tls-ca'] !== undefined) throw new ParamError('--secret-file, --tls and --tls-ca do not apply to an ssh remote (HOST:/path)');
            await checkInput(argv.A, 'A');
            const r = await (await verifyMod()).verifyRemote(argv.A, {
              host: viaSsh.host,
              port: 0,
              volume: viaSsh.path,
              secret: new Uint8Array(0),
              ssh: { rsh: splitCommand(argv.rsh ?? 'ssh'), host: viaSsh.host, remoteResync: argv['remote-resync'] ?? 'resync' },
              blockSize,
              maxRanges: argv['max-ranges'],
              stateDir: argv['state-dir'],
              idleTimeoutMs: (argv.timeout ?? 300) * 1000,
              bwlimit: parseBwlimit(argv.bwlimit),
              onProgress: progress,
            });
            differ = !r.identical;
            return verifySummary(r, argv.json, { remote: argv.B, bytesSent: r.bytesSent, bytesReceived: r.bytesReceived, elapsedMs: r.elapsedMs });
          }
          if (argv.rsh !== undefined || argv['remote-resync'] !== undefined) throw new ParamError('--rsh and --remote-resync apply when B is an ssh remote ([user@]host:/path)');
          const remote = isRemoteSpec(argv.B);
          if (!remote && (argv['secret-file'] !== undefined || argv.bwlimit !== undefined || argv.tls || argv['tls-ca'] !== undefined)) {
            throw new ParamError(`--secret-file, --bwlimit, --tls and --tls-ca apply when B is a remote volume (HOST:PORT/VOLUME); ${argv.B} is a local path`);
          }
          await checkInput(argv.A, 'A');
          if (!remote) await checkInput(argv.B, 'B');
          if (remote) {
            // As push and pull read it: a file other users can read is warned about.
            const secret = await (await import('./net.js')).clientSecret(argv['secret-file'], undefined);
            const r = await (await verifyMod()).verifyRemote(argv.A, {
              ...parseRemote(argv.B),
              secret,
              blockSize,
              maxRanges: argv['max-ranges'],
              stateDir: argv['state-dir'],
              idleTimeoutMs: (argv.timeout ?? 300) * 1000,
              bwlimit: parseBwlimit(argv.bwlimit),
              tls: await clientTls(argv.tls ?? false, argv['tls-ca']),
              onProgress: progress,
            });
            differ = !r.identical;
            return verifySummary(r, argv.json, { remote: argv.B, bytesSent: r.bytesSent, bytesReceived: r.bytesReceived, elapsedMs: r.elapsedMs });
          }
          const r = await (await verifyMod()).verifyFiles(argv.A, argv.B, { blockSize, maxRanges: argv['max-ranges'], onProgress: progress, stateDir: argv['state-dir'] });
          differ = !r.identical;
          return verifySummary(r, argv.json, { elapsedMs: r.elapsedMs });
        },
        (e) => (isRemoteSpec(argv.B) || argv.B.includes(':') ? networkHint(e, argv.B) : undefined),
      );
      if (differ && process.exitCode === 0) process.exitCode = EXIT_DIFFERENT;
    },
  );
}
