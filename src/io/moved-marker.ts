/**
 * The marker an in-place receiver leaves beside its image when it moves to a
 * temp file (io/adaptive.ts). A temp file keeps no progress across a cut, so
 * on a link that drops more often than one transfer takes, every retry would
 * start over and none would finish. The marker makes the next session stay
 * in place under its undo journal, which a cut does not lose; whichever
 * session next finishes removes it. It is only advice: a marker lost (a
 * crash before the directory reached the disk, a directory not writable)
 * costs one more attempt that starts over, never correctness.
 */
// fs.promises, not node:fs/promises: the CLI's interruption message asks for it (see dirty-marker.ts).
import { promises as fsp } from 'node:fs';

export function movedMarkerPath(imagePath: string): string {
  return `${imagePath}.resync-moved`;
}

/** Whether the last session into this image moved to a temp file and did not finish. */
export async function movedSessionCut(imagePath: string): Promise<boolean> {
  const fh = await fsp.open(movedMarkerPath(imagePath), 'r').catch(() => null);
  await fh?.close();
  return fh !== null;
}

/** Leave the marker (best effort: see above). */
export async function setMovedMarker(imagePath: string): Promise<void> {
  await fsp.writeFile(movedMarkerPath(imagePath), '').catch(() => undefined);
}

/** Remove it: a session into the image finished. */
export async function clearMovedMarker(imagePath: string): Promise<void> {
  await fsp.rm(movedMarkerPath(imagePath), { force: true }).catch(() => undefined);
}
