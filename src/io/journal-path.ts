/** Where an image's undo journal lives: apart from io/journal.ts so the CLI can name it without loading the journal code. */
import { mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';

/**
 * Journal path for an image: beside it, except for devices under /dev (a
 * memory file system: the journal would not survive the reboot it exists
 * for), whose journals go to $RESYNC_JOURNAL_DIR or /var/lib/resync.
 */
export function journalPathFor(imagePath: string): string {
  const abs = resolve(imagePath);
  if (abs.startsWith('/dev/')) {
    const dir = process.env.RESYNC_JOURNAL_DIR ?? '/var/lib/resync';
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    return join(dir, `${abs.slice(5).replace(/\//g, '_')}.resync-journal`);
  }
  return `${imagePath}.resync-journal`;
}
