/** `resync signature|delta|patch|recover`: the offline file commands. */
import type { Argv } from 'yargs';
import { promises as fsp } from 'node:fs';
// Loaded on first use: keeps start-up short for commands that do not need it.
const filesApi = () => import('../../api/files.js');
// Loaded on first use: keeps start-up short for commands that do not need it.
const rdiffApi = () => import('../../api/rdiff.js');
import { ParamError } from '../../core/errors.js';
import { RDIFF_DEFAULT_SIG_TYPE, RDIFF_SIG_TYPES, type RdiffSigType } from '../../rdiff/constants.js';
import type { StrongAlg } from '../../core/strong.js';
import { intOption, READ_STATE_DIR_OPTION, secondsOption, sizeOption } from '../options.js';
import { fileKind, formatHint, NOTHING_TO_RECOVER } from '../hints.js';
import { checkInput, prepareOutput, type NamedInput } from '../paths.js';
import { STDIO } from '../stdio.js';
import { dryRunDeltaCommand } from './verify.js';
import { localInterrupted, outputOptions, runCommand, shq, type CommonArgs } from '../run.js';
import { isNbdUri } from '../../io/nbd/uri.js';
import { defaultStateDir } from '../../io/state-dir.js';

const FORMAT_OPTION = {
  type: 'string',
  choices: ['resync', 'rdiff'],
  default: 'resync',
  describe: "file format: resync's own, or librsync's (rdiff) signature and delta formats",
} as const;

const STATE_DIR_OPTION = {
  type: 'string',
  describe: 'with an NBD export (nbd://, nbd+unix://, nbds://, nbds+unix://): where its undo journal is kept while it is written, and a killed update\'s is found (default $XDG_STATE_HOME/resync or ~/.local/state/resync)',
} as const;

const FORCE_OPTION = { alias: 'f', type: 'boolean', default: false, describe: 'overwrite an existing output file (never one of the inputs)' } as const;

/** The inputs that are files (not `-`), for prepareOutput. */
function files(...inputs: NamedInput[]): NamedInput[] {
  return inputs.filter((i) => i.path !== STDIO);
}

/** --json prints on stdout: not when stdout carries the output. */
function checkJsonOutput(json: boolean, output: string | undefined, what: string): void {
  if (json && output === STDIO) throw new ParamError(`--json prints on standard output, which ${what} - takes: give ${what} a file name, or leave out --json`);
}

/**
 * Refuse, even with -f, to write OUTPUT over an existing file that is no signature or delta when the
 * INPUT it is made from is one: the arguments are swapped, and the image is about to be destroyed
 * (`resync signature recovery.sig recovery.img -f`, the rdiff habit).
 */
async function refuseSwapped(input: { what: string; path: string }, output: { what: string; path: string }, usage: string): Promise<void> {
  if (input.path === STDIO || output.path === STDIO) return;
  const kind = await fileKind(input.path);
  if (!kind) return;
  const st = await fsp.stat(output.path).catch(() => null);
  if (!st || (!st.isFile() && !st.isBlockDevice()) || (st.isFile() && st.size === 0) || (await fileKind(output.path))) return;
  throw new ParamError(
    `${input.what} ${input.path} is a${kind.startsWith('rdiff') ? 'n' : ''} ${kind}, and ${output.what} ${output.path} is not: the arguments look swapped, and writing would destroy ${output.path} (refused even with -f/--force); the order is ${usage}`,
    { path: output.path },
  );
}

const SIG_USAGE = 'resync signature BASIS SIGNATURE';
const DELTA_USAGE = 'resync delta SIGNATURE NEWFILE DELTA';
const PATCH_USAGE = 'resync patch BASIS DELTA OUTPUT';

/** Register the file commands. */
export function fileCommands(y: Argv<CommonArgs>): Argv<CommonArgs> {
  return y
    .command(
      'signature <basis> <signature>',
      'Compute the block signature of BASIS (the old image) into SIGNATURE',
      (a) =>
        outputOptions(a)
          .positional('basis', { type: 'string', demandOption: true, describe: 'image the receiver already has (file, block device, or - for standard input)' })
          .positional('signature', { type: 'string', demandOption: true, describe: 'signature file to write (- for standard output)' })
          .option('force', FORCE_OPTION)
          .option('block-size', { alias: 'b', type: 'string', coerce: sizeOption('block-size'), describe: 'block size (e.g. 4K, 64K); default: about sqrt(image size), 2K..128K' })
          .option('hash', { type: 'string', choices: ['blake3', 'sha256', 'blake2b'], defaultDescription: 'blake3', describe: 'strong hash algorithm (keyed BLAKE3, or SHA-256/BLAKE2b with the seed in front); resync format' })
          .option('strong-len', { requiresArg: true, coerce: intOption('strong-len', 8, 32), defaultDescription: '16', describe: 'bytes of strong hash kept per block (8..32); resync format' })
          .option('format', FORMAT_OPTION)
          .option('sig-cache', { type: 'boolean', default: true, describe: "take the sums from BASIS's signature cache (BASIS.resync-sig, left by an in-place push or pull) when it is valid, instead of reading BASIS; --no-sig-cache: read it" })
          .option('state-dir', READ_STATE_DIR_OPTION)
          .option('sig-type', {
            type: 'string',
            choices: RDIFF_SIG_TYPES,
            defaultDescription: RDIFF_DEFAULT_SIG_TYPE,
            describe: 'rdiff signature variant (--format rdiff): rollsum or RabinKarp (rk-) weak sum, MD4 or BLAKE2 strong hash',
          })
          .option('sum-size', {
            alias: 'S',
            requiresArg: true,
            coerce: intOption('sum-size', -1, 32),
            defaultDescription: '0',
            describe: 'rdiff strong sum bytes (--format rdiff): 0 = full hash, -1 = recommended minimum',
          })
          .example('$0 signature recovery.img recovery.sig', 'describe the stale copy (run where it lives)')
          .example('$0 signature --format rdiff old.img old.sig', 'a signature rdiff 2.x reads')
          .example('$0 signature - - < old.img > old.sig', 'read standard input, write standard output'),
      (argv) =>
        runCommand('signature', argv, async (progress, spool) => {
          const rdiff = argv.format === 'rdiff';
          if (rdiff && (argv.hash !== undefined || argv['strong-len'] !== undefined)) throw new ParamError('--hash and --strong-len apply to resync signatures; rdiff ones take --sig-type and --sum-size');
          if (!rdiff && (argv['sig-type'] !== undefined || argv['sum-size'] !== undefined)) throw new ParamError('--sig-type and --sum-size apply with --format rdiff; resync signatures take --hash and --strong-len');
          checkJsonOutput(argv.json, argv.signature, 'SIGNATURE');
          if (argv.basis !== STDIO) await checkInput(argv.basis, 'BASIS', true);
          await refuseSwapped({ what: 'BASIS', path: argv.basis }, { what: 'SIGNATURE', path: argv.signature }, SIG_USAGE);
          const out =
            argv.signature === STDIO
              ? await spool.output(STDIO)
              : await prepareOutput(argv.signature, 'SIGNATURE', { force: argv.force, inputs: files({ what: 'BASIS', path: argv.basis }), usage: SIG_USAGE });
          const basis = await spool.input(argv.basis, 'BASIS');
          let summary: Record<string, unknown>;
          if (rdiff) {
            const r = await (await rdiffApi()).rdiffSignatureFile(basis, out, {
              blockSize: argv['block-size'],
              sigType: (argv['sig-type'] ?? RDIFF_DEFAULT_SIG_TYPE) as RdiffSigType,
              strongLen: argv['sum-size'] ?? 0,
              onProgress: progress,
            });
            summary = { format: 'rdiff', sigType: r.sigType, imageSize: r.imageSize, blockSize: r.blockSize, strongLen: r.strongLen, signatureBytes: r.bytesOut, elapsedMs: r.elapsedMs };
          } else {
            const r = await (await filesApi()).signatureFile(basis, out, {
              blockSize: argv['block-size'],
              strongAlg: (argv.hash ?? 'blake3') as StrongAlg,
              strongLen: argv['strong-len'] ?? 16,
              onProgress: progress,
              sigCache: argv.basis !== STDIO && argv['sig-cache'],
              stateDir: argv['state-dir'],
            });
            summary = { imageSize: r.imageSize, blockSize: r.blockSize, signatureBytes: r.bytesOut, elapsedMs: r.elapsedMs };
          }
          if (argv.signature === STDIO) await spool.send(out);
          return summary;
        }),
    )
    .command(
      'delta <signature> <newfile> <delta>',
      'Scan NEWFILE against SIGNATURE and write the DELTA that turns the basis into NEWFILE',
      (a) =>
        outputOptions(a)
          .positional('signature', { type: 'string', demandOption: true, describe: "signature of the receiver's image (- for standard input)" })
          .positional('newfile', { type: 'string', demandOption: true, describe: 'the new image, the source (file, block device, or - for standard input)' })
          .positional('delta', { type: 'string', demandOption: true, describe: 'delta file to write (- for standard output)' })
          .option('force', FORCE_OPTION)
          .option('dry-run', { type: 'boolean', default: false, describe: 'report what the delta would hold and its size; write nothing (resync format)' })
          .option('format', FORMAT_OPTION)
          .option('compress', { type: 'boolean', default: false, describe: 'compress literal data (raw DEFLATE; resync format only)' })
          .option('state-dir', READ_STATE_DIR_OPTION)
          .example('$0 delta recovery.sig primary.img update.delta', 'what turns the recovery copy into the primary')
          .example('$0 delta --dry-run recovery.sig primary.img -', 'how big that delta would be; writes nothing'),
      (argv) =>
        runCommand(
          'delta',
          argv,
          async (progress, spool) => {
            if (argv.compress && argv.format === 'rdiff') throw new ParamError('--compress works with the resync format only: rdiff deltas have no compressed literals');
            if (!argv['dry-run']) checkJsonOutput(argv.json, argv.delta, 'DELTA');
            if (argv.signature !== STDIO) await checkInput(argv.signature, 'SIGNATURE', true);
            if (argv.newfile !== STDIO) await checkInput(argv.newfile, 'NEWFILE', true);
            if (!argv['dry-run']) await refuseSwapped({ what: 'NEWFILE', path: argv.newfile }, { what: 'DELTA', path: argv.delta }, DELTA_USAGE);
            const inputs = files({ what: 'SIGNATURE', path: argv.signature }, { what: 'NEWFILE', path: argv.newfile });
            const out = argv['dry-run'] ? '' : argv.delta === STDIO ? await spool.output(STDIO) : await prepareOutput(argv.delta, 'DELTA', { force: argv.force, inputs, usage: DELTA_USAGE });
            const sig = await spool.input(argv.signature, 'SIGNATURE');
            const newfile = await spool.input(argv.newfile, 'NEWFILE');
            if (argv['dry-run']) return dryRunDeltaCommand(sig, newfile, argv.format, argv.compress, progress, argv['state-dir']);
            const r =
              argv.format === 'rdiff'
                ? await (await rdiffApi()).rdiffDeltaFile(sig, newfile, out, { onProgress: progress })
                : await (await filesApi()).deltaFile(sig, newfile, out, { onProgress: progress, compress: argv.compress, stateDir: argv['state-dir'] });
            if (argv.delta === STDIO) await spool.send(out);
            return {
              imageSize: r.imageSize,
              blockSize: r.blockSize,
              matchedBytes: r.matchedBytes,
              literalBytes: r.literalBytes,
              copyOps: r.copyOps,
              literalOps: r.literalOps,
              deltaBytes: r.bytesOut,
              elapsedMs: r.elapsedMs,
            };
          },
          async (e) => {
            if (!isFileError(e) || argv.signature === STDIO) return undefined;
            // Swapped SIGNATURE and NEWFILE: the image fails as a signature, and the "new file" is one.
            const newKind = argv.newfile === STDIO ? null : await fileKind(argv.newfile);
            if (newKind?.endsWith('signature') && !(await fileKind(argv.signature))) {
              return `NEWFILE ${argv.newfile} is a${newKind.startsWith('rdiff') ? 'n' : ''} ${newKind}: the arguments look swapped; the order is ${DELTA_USAGE}`;
            }
            return formatHint(argv.signature, 'signature', argv.format);
          },
        ),
    )
    .command(
      'patch <basis> <delta> [output]',
      'Apply DELTA to BASIS, writing OUTPUT (a temp file renamed after verification), or BASIS itself with --in-place',
      (a) =>
        outputOptions(a)
          .positional('basis', { type: 'string', demandOption: true, describe: 'the image the signature was made from (file or block device; read at random offsets, so not -)' })
          .positional('delta', { type: 'string', demandOption: true, describe: 'delta file (- for standard input)' })
          .positional('output', { type: 'string', describe: 'new image (- for standard output, after verification); may be BASIS itself (replaced only after verification)' })
          .option('force', FORCE_OPTION)
          .option('format', FORMAT_OPTION)
          .option('in-place', { type: 'boolean', default: false, describe: 'patch BASIS itself, writing only what changed, under an undo journal (BASIS.resync-journal); resync format' })
          .option('resume', { type: 'boolean', default: false, describe: 'continue an interrupted --in-place patch of the same delta' })
          .option('state-dir', STATE_DIR_OPTION)
          .example('$0 patch recovery.img update.delta new.img', 'write the new image, verified before it is renamed into place')
          .example('$0 patch --in-place recovery.img update.delta', 'rewrite only the changed blocks of recovery.img, under an undo journal')
          .example("$0 patch --resume recovery.img update.delta", 'finish an in-place patch that was interrupted')
          .check((v) => {
            if (!v['in-place'] && !v.resume && !v.output) throw new ParamError('give OUTPUT, or --in-place to patch BASIS itself');
            return true;
          }),
      (argv) =>
        runCommand(
          'patch',
          argv,
          async (progress, spool) => {
            const inPlace = argv['in-place'] || argv.resume;
            if (argv.format === 'rdiff' && inPlace) {
              throw new ParamError(
                '--in-place and --resume work with the resync format only: an rdiff delta carries no hash of the new image, so an in-place patch could be neither verified nor rolled back; give OUTPUT instead',
              );
            }
            if (argv.basis === STDIO) throw new ParamError('BASIS is read at random offsets, so it cannot be - (standard input): give a file or a block device');
            if (inPlace && argv.output === STDIO) throw new ParamError('--in-place writes BASIS itself: OUTPUT cannot be - (standard output)');
            checkJsonOutput(argv.json, argv.output, 'OUTPUT');
            await checkInput(argv.basis, 'BASIS');
            if (argv.delta !== STDIO) await checkInput(argv.delta, 'DELTA', true);
            let out = inPlace ? (argv.output ?? argv.basis) : argv.output!;
            if (!inPlace) {
              out =
                out === STDIO
                  ? await spool.output(STDIO)
                  : await prepareOutput(out, 'OUTPUT', {
                      force: argv.force,
                      inputs: files({ what: 'BASIS', path: argv.basis }, { what: 'DELTA', path: argv.delta }),
                      replaces: argv.basis,
                      usage: PATCH_USAGE,
                    });
            }
            const delta = await spool.input(argv.delta, 'DELTA');
            // A spool for standard output is read back at once: keep it in the page cache.
            const toStdout = !inPlace && argv.output === STDIO;
            let summary: Record<string, unknown>;
            if (argv.format === 'rdiff') {
              const r = await (await rdiffApi()).rdiffPatchFile(argv.basis, delta, out, { onProgress: progress, pageCache: toStdout });
              summary = {
                format: 'rdiff',
                imageSize: r.imageSize,
                matchedBytes: r.matchedBytes,
                literalBytes: r.literalBytes,
                copyOps: r.copyOps,
                literalOps: r.literalOps,
                verified: false,
                note: 'rdiff deltas carry no hash of the new file, so the output was not verified',
                elapsedMs: r.elapsedMs,
              };
            } else {
              const note = (msg: string): void => void (argv.quiet ? undefined : process.stderr.write(`resync patch: note: ${msg}\n`));
              const r = await (await filesApi()).patchFile(argv.basis, delta, out, { onProgress: progress, inPlace, resume: argv.resume, stateDir: argv['state-dir'], onNote: note, pageCache: toStdout });
              summary = {
                imageSize: r.imageSize,
                matchedBytes: r.matchedBytes,
                literalBytes: r.literalBytes,
                copyOps: r.copyOps,
                literalOps: r.literalOps,
                ...('bytesWritten' in r ? { bytesWritten: r.bytesWritten, resumedFrom: r.resumedFrom } : {}),
                ...('recovered' in r && r.recovered ? { recovered: r.recovered } : {}),
                ...('nothingToResume' in r && r.nothingToResume ? { nothingToResume: true, note: `nothing to resume: ${argv.basis} has no journal and already is the result of ${argv.delta}` } : {}),
                verified: true,
                elapsedMs: r.elapsedMs,
              };
            }
            if (argv.output === STDIO) await spool.send(out);
            return summary;
          },
          async (e) => (isFileError(e) && argv.delta !== STDIO ? formatHint(argv.delta, 'delta', argv.format) : undefined),
          () => {
            const inPlace = argv['in-place'] || argv.resume;
            const target = argv.output ?? argv.basis;
            if (!inPlace || argv.format === 'rdiff') return { target, state: 'unchanged', message: `${target} was not written (its partial temp file was removed)`, resume: 'run the same patch again' };
            const again = `run \`resync patch ${[argv.basis, argv.delta, ...(argv.output ? [argv.output] : [])].map(shq).join(' ')} --in-place --resume\` to finish it`;
            return localInterrupted(target, isNbdUri(target) ? 'what the patch wrote, if anything, was put back' : 'the patch had not started writing', isNbdUri(target) ? `run the same patch again` : again, argv['state-dir']);
          },
        ),
    )
    .command(
      'recover <image>',
      'Resolve an interrupted in-place update: finish it if it was verified, else roll IMAGE back to its original contents (checked against the hash in its journal). IMAGE may be HOST:PORT/VOLUME, [user@]host:/path (over ssh) or @NAME/VOLUME (client config): the far side then does it to the volume (an interrupted push whose primary is gone). IMAGE may be an NBD export (nbd://, nbd+unix://, nbds:// or nbds+unix:// over TLS) a killed pull or patch was writing: rolled back from its undo journal in the state directory',
      (a) =>
        outputOptions(a)
          .positional('image', { type: 'string', demandOption: true, describe: 'an image an in-place patch or pull was interrupted on, or HOST:PORT/VOLUME, [user@]host:/path (ssh) or @NAME[/VOLUME]' })
          .option('secret-file', { type: 'string', describe: 'HOST:PORT/VOLUME: file holding the shared secret (or RESYNC_SECRET_FILE)' })
          .option('tls', { type: 'boolean', describe: 'HOST:PORT/VOLUME: connect over TLS' })
          .option('tls-ca', { type: 'string', describe: 'HOST:PORT/VOLUME: PEM CA certificate to trust for --tls' })
          .option('timeout', { requiresArg: true, coerce: secondsOption('timeout'), describe: 'remote: seconds of silence before giving up (default 300)' })
          .option('rsh', { alias: 'e', type: 'string', requiresArg: true, describe: "over ssh: the ssh command, e.g. 'ssh -p 2222 -i key' (default: ssh)" })
          .option('remote-resync', { type: 'string', requiresArg: true, describe: 'over ssh: the command that runs resync on the far side (default: resync)' })
          .option('state-dir', STATE_DIR_OPTION)
          .example('$0 recover recovery.img', 'finish or roll back what recovery.img.resync-journal describes')
          .example('$0 recover dr:7873/vm1 --secret-file S', 'roll back an interrupted push on the server when the primary is gone')
          .example('$0 recover root@dr:/srv/images/vm1.img', 'the same over ssh (resync serve --stdio on dr)')
          .example("$0 recover 'nbd+unix:///vm1?socket=/run/vm1.sock'", 'roll back what a killed pull into that NBD export left'),
      (argv) => {
        // Set once the far side was asked: what it does with the volume is then its own, not known here.
        let askedRemote = false;
        return runCommand('recover', argv, async (progress) => {
          if (isNbdUri(argv.image)) {
            const r = await (await filesApi()).recoverNbd(argv.image, argv['state-dir'] ?? defaultStateDir());
            return { image: argv.image, outcome: r.outcome, verified: r.proved, ...(r.outcome === 'nothing' ? { note: NOTHING_TO_RECOVER } : {}) };
          }
          const net = await import('./net.js');
          if (net.isRemoteVolume(argv.image)) {
            askedRemote = true;
            return net.recoverRemoteCommand(argv);
          }
          let note: string | undefined;
          const outcome = await (await filesApi()).recoverImage(argv.image, { onProgress: progress, onNote: (m) => (note = m) });
          // A rollback of a session that had made the image removes it (io/inplace.ts recoverLocked).
          const removed = outcome === 'rolled-back' && !(await fsp.stat(argv.image).catch(() => null));
          if (outcome === 'nothing') note ??= NOTHING_TO_RECOVER;
          return { image: argv.image, outcome, ...(removed ? { removed: true } : {}), verified: outcome !== 'nothing' && note === undefined, ...(note ? { note } : {}) };
        }, undefined, () =>
          askedRemote
            ? { target: argv.image, state: 'unknown', message: `the far side may go on settling ${argv.image} without us`, resume: `run \`resync recover ${shq(argv.image)}\` again (same options) to see what it did ("nothing" once it is settled)` }
            : localInterrupted(argv.image, 'there was nothing to recover', `run \`resync recover ${shq(argv.image)}\` again to finish settling it`, argv['state-dir'], true));
      },
    );
}

/** Errors that a file of the wrong kind or format causes. */
function isFileError(e: unknown): boolean {
  const code = (e as { code?: unknown } | null)?.code;
  return code === 'ERR_BAD_MAGIC' || code === 'ERR_VERSION';
}
