/** What the CLI tells an operator after an interrupted in-place update of a local file (src/cli/run.ts). */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, test } from 'vitest';
import { localInterrupted } from '../../src/cli/run.js';
import { journalPathFor } from '../../src/io/journal.js';

test('a file under its journal: the command again or recover; a recover cut short names itself once', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'resync-interrupted-'));
  try {
    const img = join(dir, 'b.img');
    expect(localInterrupted(img, 'nothing written', 'run the same pull again')).toMatchObject({ state: 'unchanged' });
    await writeFile(journalPathFor(img), 'x');
    const pull = localInterrupted(img, 'nothing written', 'run the same pull again');
    expect(pull).toMatchObject({ state: 'journaled', journal: journalPathFor(img) });
    expect(pull.resume).toBe(`run the same pull again, or \`resync recover ${img}\` to roll it back (or finish it, if it was verified already)`);
    // It read "run `resync recover b.img` again to finish settling it, or `resync recover b.img` to roll it back".
    const again = `run \`resync recover ${img}\` again to finish settling it`;
    expect(localInterrupted(img, 'there was nothing to recover', again, undefined, true).resume).toBe(again);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
