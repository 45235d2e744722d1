/** Sparse files for tests: holes made by truncate, random data written at given places. */
import { randomBytes } from 'node:crypto';
import { open } from 'node:fs/promises';

/** A sparse file of `size` bytes with random data at each [offset, length) and holes elsewhere. */
export async function writeSparse(path: string, size: number, data: readonly (readonly [number, number])[]): Promise<void> {
  const fh = await open(path, 'w');
  try {
    await fh.truncate(size);
    for (const [at, n] of data) await fh.write(randomBytes(n), 0, n, at);
  } finally {
    await fh.close();
  }
}
