/**
 * The signature spec a replica's server took for the last push to it, kept
 * by the pushing side in its state directory.
 *
 * A push hashes its image before the session is open, under the spec the
 * server will most likely take (net/client.ts, earlyPrepass). The server
 * takes the seed offered unless its signature cache of the volume is valid
 * under another, and a push leaves it exactly such a cache: under the seed
 * of that push. So the next push to the same volume, offering a seed of its
 * own, had its early pass cancelled and made again, and lost the head start
 * on the most common sync of all (the next one to the same replica). Offering
 * the seed the server took last time keeps it.
 *
 * Only ever a guess: the server's signature decides the spec, and a pass
 * under another is cancelled and made again (one missing, unreadable, stale
 * or from another image size costs that, never a wrong result). The seed is
 * no secret: it crosses the wire in every signature, and the server keeps it
 * in its cache. One small JSON file per replica (host and port, or ssh host,
 * and volume), replaced whole by a rename.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdir, rename, unlink, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { SEED_LEN } from '../core/limits.js';
import { blockCountFor, defaultBlockSize, makeSignatureParams, type SignatureParams } from '../core/signature.js';
import { STRONG_ALGS, type StrongAlg } from '../core/strong.js';

/** What a push to a replica's volume was hashed under. */
export interface RememberedSpec {
  params: SignatureParams;
  /** Blocks per region of the two-level signature (0: one level). */
  regionBlocks: number;
}

const VERSION = 1;
/** The file is a few hundred bytes: anything larger is not one. */
const MAX_BYTES = 4096;

/** The memo file for pushes to `remote` (a replica's address and volume). */
export function specMemoPath(stateDir: string, remote: string): string {
  const h = createHash('sha256').update('resync-spec/1\0').update(remote).digest('hex');
  return join(stateDir, `spec-${h.slice(0, 32)}.json`);
}

/**
 * The spec remembered in `path` for an image of `imageSize` bytes, or null:
 * no file, one that does not parse or check, or one of another image size.
 * Synchronous: it is read before a push's first step, and is tiny.
 */
export function recallSpec(path: string, imageSize: number): RememberedSpec | null {
  try {
    const raw = readFileSync(path);
    if (raw.length > MAX_BYTES) return null;
    const j = JSON.parse(raw.toString('utf8')) as Record<string, unknown>;
    if (j.version !== VERSION || j.imageSize !== imageSize) return null;
    const { blockSize, strongLen, strongAlg, regionBlocks, seed } = j;
    if (typeof seed !== 'string' || !/^[0-9a-f]+$/.test(seed) || seed.length !== 2 * SEED_LEN) return null;
    if (typeof strongAlg !== 'string' || !Object.hasOwn(STRONG_ALGS, strongAlg)) return null;
    if (!Number.isSafeInteger(blockSize) || !Number.isSafeInteger(strongLen) || !Number.isSafeInteger(regionBlocks) || (regionBlocks as number) < 0) return null;
    // A size a server takes: a power of two, and not so small that the early pass would hash far more
    // blocks than the default's (a damaged file must not make it slow or large before it is cancelled).
    const bs = blockSize as number;
    if (bs & (bs - 1) || blockCountFor(imageSize, bs) > 4 * blockCountFor(imageSize, defaultBlockSize(imageSize))) return null;
    // Bounds as for a signature from the wire: throws on any that are off.
    const params = makeSignatureParams(imageSize, Buffer.from(seed, 'hex'), { blockSize: blockSize as number, strongLen: strongLen as number, strongAlg: strongAlg as StrongAlg });
    return { params, regionBlocks: regionBlocks as number };
  } catch {
    return null;
  }
}

/** Remember the spec a push to the replica of `path` was hashed under (the caller ignores failures: it is a hint). */
export async function rememberSpec(path: string, spec: RememberedSpec): Promise<void> {
  const p = spec.params;
  const body = JSON.stringify({
    version: VERSION,
    imageSize: p.imageSize,
    blockSize: p.blockSize,
    strongLen: p.strongLen,
    strongAlg: p.strongAlg,
    regionBlocks: spec.regionBlocks,
    seed: Buffer.from(p.seed).toString('hex'),
  });
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  // One name: a write killed half way leaves nothing that the next one does not replace. Two at once
  // may mix their bytes there, which at worst leaves a file that reads as none, or another seed: a hint.
  const tmp = `${path}.tmp`;
  try {
    await writeFile(tmp, body, { mode: 0o600 });
    await rename(tmp, path);
  } catch (e) {
    await unlink(tmp).catch(() => undefined);
    throw e;
  }
}
