/** `resync signature|delta|patch`: the offline file commands. */
import type { Argv } from 'yargs';
// Loaded on first use: keeps start-up short for commands that do not need it.
const filesApi = () => import('../../api-files.js');
// Loaded on first use: keeps start-up short for commands that do not need it.
const rdiffApi = () => import('../../api-rdiff.js');
import { RDIFF_DEFAULT_SIG_TYPE, RDIFF_SIG_TYPES, type RdiffSigType } from '../../format/rdiff/constants.js';
import type { StrongAlg } from '../../core/strong.js';
import { parseSize } from '../args.js';
import { dryRunDeltaCommand } from './ops.js';
import { runCommand, type CommonArgs } from '../run.js';

const FORMAT_OPTION = {
  type: 'string',
  choices: ['resync', 'rdiff'],
  default: 'resync',
  describe: "file format: resync's own, or librsync's (rdiff) signature and delta formats",
} as const;

/** Register the file commands. */
export function fileCommands(y: Argv<CommonArgs>): Argv<CommonArgs> {
  return y
    .command(
      'signature <basis> <signature>',
      'Compute the block signature of BASIS (the old image) into SIGNATURE',
      (a) =>
        a
          .positional('basis', { type: 'string', demandOption: true, describe: 'image the receiver already has' })
          .positional('signature', { type: 'string', demandOption: true, describe: 'signature file to write' })
          .option('block-size', { alias: 'b', type: 'string', describe: 'block size (e.g. 4K, 64K); default: about sqrt(image size), 2K..128K' })
          .option('hash', { type: 'string', choices: ['blake3', 'sha256', 'blake2b'], default: 'blake3', describe: 'strong hash algorithm (keyed BLAKE3, or SHA-256/BLAKE2b with the seed in front)' })
          .option('strong-len', { type: 'number', default: 16, describe: 'bytes of strong hash kept per block (8..32)' })
          .option('format', FORMAT_OPTION)
          .option('sig-type', {
            type: 'string',
            choices: RDIFF_SIG_TYPES,
            default: RDIFF_DEFAULT_SIG_TYPE,
            describe: 'rdiff signature variant (--format rdiff): rollsum or RabinKarp (rk-) weak sum, MD4 or BLAKE2 strong hash',
          })
          .option('sum-size', {
            alias: 'S',
            type: 'number',
            default: 0,
            describe: 'rdiff strong sum bytes (--format rdiff): 0 = full hash, -1 = recommended minimum',
          }),
      (argv) =>
        runCommand('signature', argv, async (progress) => {
          if (argv.format === 'rdiff') {
            const r = await (await rdiffApi()).rdiffSignatureFile(argv.basis, argv.signature, {
              blockSize: argv['block-size'] !== undefined ? parseSize(argv['block-size'], 'block size') : undefined,
              sigType: argv['sig-type'] as RdiffSigType,
              strongLen: argv['sum-size'],
              onProgress: progress,
            });
            return { format: 'rdiff', sigType: r.sigType, imageSize: r.imageSize, blockSize: r.blockSize, strongLen: r.strongLen, signatureBytes: r.bytesOut, elapsedMs: r.elapsedMs };
          }
          const r = await (await filesApi()).signatureFile(argv.basis, argv.signature, {
            blockSize: argv['block-size'] !== undefined ? parseSize(argv['block-size'], 'block size') : undefined,
            strongAlg: argv.hash as StrongAlg,
            strongLen: argv['strong-len'],
            onProgress: progress,
          });
          return { imageSize: r.imageSize, blockSize: r.blockSize, signatureBytes: r.bytesOut, elapsedMs: r.elapsedMs };
        }),
    )
    .command(
      'delta <signature> <newfile> <delta>',
      'Scan NEWFILE against SIGNATURE and write the DELTA that turns the basis into NEWFILE',
      (a) =>
        a
          .positional('signature', { type: 'string', demandOption: true })
          .positional('newfile', { type: 'string', demandOption: true, describe: 'the new image (the source)' })
          .positional('delta', { type: 'string', demandOption: true, describe: 'delta file to write' })
          .option('dry-run', { type: 'boolean', default: false, describe: 'report what the delta would hold and its size; write nothing (resync format)' })
          .option('format', FORMAT_OPTION)
          .option('compress', { type: 'boolean', default: false, describe: 'compress literal data (raw DEFLATE; resync format only)' }),
      (argv) =>
        runCommand('delta', argv, async (progress) => {
          if (argv['dry-run']) return dryRunDeltaCommand(argv.signature, argv.newfile, argv.format, argv.compress, progress);
          const r =
            argv.format === 'rdiff'
              ? await (await rdiffApi()).rdiffDeltaFile(argv.signature, argv.newfile, argv.delta, { onProgress: progress })
              : await (await filesApi()).deltaFile(argv.signature, argv.newfile, argv.delta, { onProgress: progress, compress: argv.compress });
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
        }),
    )
    .command(
      'patch <basis> <delta> [output]',
      'Apply DELTA to BASIS, writing OUTPUT (a temp file renamed after verification), or BASIS itself with --in-place',
      (a) =>
        a
          .positional('basis', { type: 'string', demandOption: true })
          .positional('delta', { type: 'string', demandOption: true })
          .positional('output', { type: 'string', describe: 'new image; may be the basis itself (replaced only after verification)' })
          .option('format', FORMAT_OPTION)
          .option('in-place', { type: 'boolean', default: false, describe: 'patch BASIS itself, writing only what changed, under an undo journal (BASIS.resync-journal)' })
          .option('resume', { type: 'boolean', default: false, describe: 'continue an interrupted --in-place patch of the same delta' })
          .check((v) => {
            if (!v['in-place'] && !v.resume && !v.output) throw new Error('give OUTPUT, or --in-place to patch BASIS itself');
            return true;
          }),
      (argv) =>
        runCommand('patch', argv, async (progress) => {
          if (argv.format === 'rdiff') {
            const r = await (await rdiffApi()).rdiffPatchFile(argv.basis, argv.delta, argv.output ?? argv.basis, { onProgress: progress });
            return {
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
          }
          const inPlace = argv['in-place'] || argv.resume;
          const r = await (await filesApi()).patchFile(argv.basis, argv.delta, inPlace ? (argv.output ?? argv.basis) : argv.output!, { onProgress: progress, inPlace, resume: argv.resume });
          return {
            imageSize: r.imageSize,
            matchedBytes: r.matchedBytes,
            literalBytes: r.literalBytes,
            copyOps: r.copyOps,
            literalOps: r.literalOps,
            ...('bytesWritten' in r ? { bytesWritten: r.bytesWritten, resumedFrom: r.resumedFrom } : {}),
            verified: true,
            elapsedMs: r.elapsedMs,
          };
        }),
    )
    .command(
      'recover <image>',
      'Resolve an interrupted in-place update: finish it if it was verified, else roll IMAGE back to its original contents (checked against the hash in its journal). IMAGE may be HOST:PORT/VOLUME: the server then does it to the volume (an interrupted push whose primary is gone)',
      (a) =>
        a
          .positional('image', { type: 'string', demandOption: true, describe: 'an image, or HOST:PORT/VOLUME' })
          .option('secret-file', { type: 'string', describe: 'HOST:PORT/VOLUME: file holding the shared secret (or RESYNC_SECRET_FILE)' })
          .option('tls', { type: 'boolean', default: false, describe: 'HOST:PORT/VOLUME: connect over TLS' })
          .option('tls-ca', { type: 'string', describe: 'HOST:PORT/VOLUME: PEM CA certificate to trust for --tls' })
          .option('timeout', { type: 'number', default: 300, describe: 'HOST:PORT/VOLUME: seconds of silence before giving up' }),
      (argv) =>
        runCommand('recover', argv, async () => {
          const net = await import('./net.js');
          if (net.isRemoteVolume(argv.image)) return net.recoverRemoteCommand(argv);
          const outcome = await (await filesApi()).recoverImage(argv.image);
          return { image: argv.image, outcome, verified: outcome !== 'nothing' };
        }),
    );
}
