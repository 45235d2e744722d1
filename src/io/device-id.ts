/**
 * Which disk a block device node stands for, as far as the kernel says
 * (sysfs): a journal is named for the device's path (io/journal-path.ts),
 * and after a reboot or a detach that path may name another disk (loop,
 * sd and nbd names are handed out again). A journal records the identity
 * of the disk it was made on, and is never applied to another one.
 *
 * The identity is the first of: a loop device's backing file (path, device,
 * inode and offset), a device-mapper or md UUID, the disk's WWID or serial
 * number; a partition's is its disk's with the partition number and start.
 * A disk that shows none of these (a virtio disk without a serial) has no
 * identity, and its journals are checked by size only.
 */
import { readFileSync, realpathSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';

/** A sysfs attribute's text, trimmed; undefined when absent, unreadable or empty. */
function attr(dir: string, name: string): string | undefined {
  try {
    const s = readFileSync(join(dir, name), 'utf8').trim();
    return s === '' ? undefined : s;
  } catch {
    return undefined;
  }
}

/** The identity of the disk whose sysfs directory is `dir` (resolved), or undefined. */
function identityOf(dir: string, depth = 0): string | undefined {
  const part = attr(dir, 'partition');
  if (part !== undefined) {
    if (depth > 0) return undefined;
    const disk = identityOf(dirname(dir), depth + 1);
    return disk === undefined ? undefined : `${disk} part ${part} start ${attr(dir, 'start') ?? '?'}`;
  }
  const backing = attr(dir, 'loop/backing_file');
  if (backing !== undefined) {
    let file = '';
    try {
      const st = statSync(backing, { bigint: true });
      file = ` dev ${st.dev} ino ${st.ino}`;
    } catch {
      // The file was deleted or renamed since: its path alone says less, and still differs from another's.
    }
    return `loop ${backing}${file} offset ${attr(dir, 'loop/offset') ?? '0'}`;
  }
  for (const [label, name] of [
    ['dm', 'dm/uuid'],
    ['md', 'md/uuid'],
    ['wwid', 'wwid'],
    ['wwid', 'device/wwid'],
    ['serial', 'serial'],
    ['serial', 'device/serial'],
  ] as const) {
    const v = attr(dir, name);
    if (v !== undefined) return `${label} ${v}`;
  }
  return undefined;
}

/** The identity of the disk behind the block device `rdev` (stat's, as a bigint), or undefined where the kernel gives none. */
export function deviceIdentity(rdev: bigint): string | undefined {
  // Linux's dev_t: 12 bits of major above 8 of minor, the rest of both higher up.
  const major = ((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn);
  const minor = (rdev & 0xffn) | ((rdev >> 12n) & ~0xffn);
  let dir: string;
  try {
    dir = realpathSync(`/sys/dev/block/${major}:${minor}`);
  } catch {
    return undefined;
  }
  return identityOf(dir);
}
