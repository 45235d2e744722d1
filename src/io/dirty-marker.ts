/**
 * The marker a dirty-bitmap push (net/dirty.ts) leaves beside a volume while
 * it writes. Its undo journal (the file journal's format, beside the volume
 * too) is what rolls such a push back; the marker says which kind of update
 * it was, so that reads are refused with the right advice, and it outlives
 * the journal only where nothing can roll the push back (a marker left by a
 * build that kept the old bytes in a scratch file the crash took with it).
 */
// fs.promises, not node:fs/promises: this module is reached at every start (the CLI's recover note).
import { promises as fsp } from 'node:fs';
import { ioError } from './errors.js';

export function dirtyMarkerPath(volumePath: string): string {
  return `${volumePath}.resync-dirty`;
}

/** Whether an earlier dirty push to this volume did not finish. */
export async function dirtyPushUnfinished(volumePath: string): Promise<boolean> {
  const fh = await fsp.open(dirtyMarkerPath(volumePath), 'r').catch(() => null);
  await fh?.close();
  return fh !== null;
}

/** Create the marker durably (before a dirty push's first write). */
export async function setDirtyMarker(volumePath: string): Promise<void> {
  const marker = dirtyMarkerPath(volumePath);
  const fh = await fsp.open(marker, 'w').catch((e: unknown) => {
    throw ioError(e, 'create', marker);
  });
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Remove the marker (after a dirty push ended either way, was recovered, or a full push made the volume whole). */
export async function clearDirtyMarker(volumePath: string): Promise<void> {
  await fsp.rm(dirtyMarkerPath(volumePath), { force: true });
}

/** What a recover says of a dirty-bitmap push it settled with no image hash to check the result by. */
export const UNPROVED_DIRTY =
  'it was a --dirty-bitmap push and no hash of the whole image was known (no signature cache): the saved blocks were put back exactly, but the image as a whole was not checked; `resync verify` it against the primary, or push the whole image';
