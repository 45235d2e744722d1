/** Whether a directory's filesystem takes O_DIRECT opens (tmpfs before Linux 6.6, FUSE mounts may not). */
import { constants } from 'node:fs';
import { open, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

export async function directSupported(dir: string): Promise<boolean> {
  const probe = join(dir, `direct-probe-${process.pid}`);
  await writeFile(probe, '');
  try {
    await (await open(probe, constants.O_WRONLY | constants.O_DIRECT)).close();
    return true;
  } catch {
    return false;
  } finally {
    await rm(probe, { force: true });
  }
}
