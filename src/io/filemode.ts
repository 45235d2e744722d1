/**
 * Who owns an output and with what mode. Every file resync creates (a temp
 * file renamed over its target, a new image for a first pull or push, a
 * signature or delta) goes through here: a replaced file keeps its target's
 * mode, owner and group, and a new one gets 0666 less the umask, as rdiff or
 * cp would give it. A VM whose image came back 0600 root:root does not start.
 */
import { stat, type FileHandle } from 'node:fs/promises';

/** Mode of a new file before the umask (open(2) applies the umask to it). */
export const NEW_FILE_MODE = 0o666;

/** What an output should carry when it is committed. */
export interface OutputMeta {
  /** Permission bits (with setuid/setgid/sticky), 0o7777 at most. */
  mode: number;
  /** Owner and group to keep, or null for a new file (the creator's). */
  owner: { uid: number; gid: number } | null;
}

/** The metadata an output at `path` should have: the existing file's, or a new file's default. */
export async function outputMetaFor(path: string): Promise<OutputMeta> {
  const st = await stat(path).catch((e: NodeJS.ErrnoException) => {
    if (e.code === 'ENOENT' || e.code === 'ENOTDIR') return null;
    throw e;
  });
  if (st && st.isFile()) return { mode: st.mode & 0o7777, owner: { uid: st.uid, gid: st.gid } };
  return { mode: NEW_FILE_MODE & ~process.umask(), owner: null };
}

/**
 * Give an open output its metadata. The owner first: chown clears the
 * setuid and setgid bits, which chmod then puts back. Where the owner cannot
 * be kept (not root) the group still is, if the user is in it: a shared
 * image stays readable by its group. What is not permitted keeps the
 * creator's, as cp does; any other failure is an error.
 */
export async function applyOutputMeta(fh: FileHandle, meta: OutputMeta): Promise<void> {
  if (meta.owner) {
    if (!(await chownPermitted(fh, meta.owner.uid, meta.owner.gid))) await chownPermitted(fh, -1, meta.owner.gid);
  }
  await fh.chmod(meta.mode);
}

/** chown, false where it is not permitted. */
async function chownPermitted(fh: FileHandle, uid: number, gid: number): Promise<boolean> {
  try {
    await fh.chown(uid, gid);
    return true;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== 'EPERM' && code !== 'EINVAL') throw e;
    return false;
  }
}
