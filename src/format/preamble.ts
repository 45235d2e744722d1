/** The 8-byte preamble of every resync file: magic u32 BE, version u16 BE, flags u16 BE (zero). */
import { SyncError, UnexpectedEofError } from '../core/errors.js';
import { PREAMBLE_LEN } from '../../protocol/constants.js';

/** Build a preamble. */
export function encodePreamble(magic: number, version: number): Buffer {
  const b = Buffer.alloc(PREAMBLE_LEN);
  b.writeUInt32BE(magic, 0);
  b.writeUInt16BE(version, 4);
  return b;
}

/** Check a preamble (`version`: the one accepted, or a list); `kind` names the file for messages. Returns the version. */
export function checkPreamble(b: Uint8Array, magic: number, version: number | readonly number[], kind: string): number {
  if (b.length < PREAMBLE_LEN) throw new UnexpectedEofError(`${kind} preamble`, PREAMBLE_LEN, b.length);
  const buf = Buffer.from(b.buffer, b.byteOffset, PREAMBLE_LEN);
  const m = buf.readUInt32BE(0);
  if (m !== magic) {
    throw new SyncError('ERR_BAD_MAGIC', `not a resync ${kind}: magic 0x${m.toString(16).padStart(8, '0')}, expected 0x${magic.toString(16)}`, {
      magic: m,
    });
  }
  const v = buf.readUInt16BE(4);
  const accepted = typeof version === 'number' ? [version] : version;
  if (!accepted.includes(v)) {
    throw new SyncError('ERR_VERSION', `${kind} format version ${v} is not supported (this build reads version ${accepted.join(' and ')})`, { version: v });
  }
  const flags = buf.readUInt16BE(6);
  if (flags !== 0) throw new SyncError('ERR_VERSION', `${kind} uses flags 0x${flags.toString(16)} this build does not know`, { flags });
  return v;
}
