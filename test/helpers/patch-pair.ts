/** An old and a new image in a directory, with the old one's signature and the delta between them. */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { deltaFile, signatureFile } from '../../src/api/files.js';

/**
 * Write DIR/old.img (`size` random bytes), DIR/new.img (64 KiB changed in
 * every MiB, so an in-place patch writes several batches), DIR/old.sig and
 * DIR/d.delta; returns both images.
 */
export async function writePatchPair(dir: string, size: number): Promise<{ oldImg: Buffer; newImg: Buffer }> {
  const oldImg = randomBytes(size);
  const newImg = Buffer.from(oldImg);
  for (let at = 0; at < size; at += 1 << 20) randomBytes(64 << 10).copy(newImg, at);
  await writeFile(join(dir, 'old.img'), oldImg);
  await writeFile(join(dir, 'new.img'), newImg);
  await signatureFile(join(dir, 'old.img'), join(dir, 'old.sig'), { sigCache: false });
  await deltaFile(join(dir, 'old.sig'), join(dir, 'new.img'), join(dir, 'd.delta'));
  return { oldImg, newImg };
}
