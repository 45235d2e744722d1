/**
 * Reading a framed file (a preamble, then frames of a u32 length and a
 * payload: delta files) in pieces that end on frame boundaries, from one
 * buffer used again and again.
 *
 * Read in fixed chunks, most large frames (a literal of up to 1 MiB) were
 * cut in two; the frame decoder then copied each into a new buffer, and
 * every chunk was a new buffer too: on a delta of 95 MiB of literals that
 * was a copy and a page fault for most of its bytes. Here a piece holds
 * whole frames only, so the decoder returns views of it and keeps nothing
 * once it has parsed it; the part of a frame that did not fit is moved to
 * the front of the buffer and the rest read behind it.
 */
import { setImmediate as nextTurn } from 'node:timers/promises';
import { FRAME_HEADER_LEN } from '../bytes/frame.js';
import { MAX_FRAME } from '../core/limits.js';
import { readExactSync, type ImageHandle } from './image.js';

/**
 * Buffer size: a piece holds up to this much; a larger frame (at most
 * MAX_FRAME) grows it. 1 MiB, the largest literal: a piece is then still in
 * the CPU's cache when the file digest hashes it and the patch copies its
 * literals out (the digest of a `patch` took 29-34 ms for 95 MiB of
 * literals against 37-41 with 4 MiB pieces, 103 against 110-115 ms for 512
 * MiB), and the buffer is 3 MiB less of the patch's memory.
 */
const CHUNK = 1024 * 1024;

/**
 * Yields the file's bytes in order: the first `preamble` bytes alone, then
 * pieces of whole frames; at the end whatever is left that is not a whole
 * frame (a truncated file, for the decoder to report). With `reuse`, a
 * piece is valid only until the next is asked for (for a consumer that
 * copies or uses the data of each op before taking the next); otherwise
 * each piece is a buffer of its own. A frame header above MAX_FRAME is
 * passed on as it is, for the decoder to reject. Reads are synchronous:
 * the file is read once, front to back, and each piece is decoded at once.
 */
export async function* readFramePieces(img: ImageHandle, preamble: number, reuse: boolean, chunk = CHUNK): AsyncGenerator<Uint8Array> {
  const size = img.size;
  let buf = Buffer.allocUnsafe(Math.max(FRAME_HEADER_LEN, Math.min(chunk, size)));
  let pos = 0; // file offset of buf[0]
  let start = 0; // first byte not yet yielded
  let end = 0; // bytes of buf filled
  for (;;) {
    // Fill the buffer (or read what is left of the file).
    const n = Math.min(buf.length - end, size - (pos + end));
    if (n > 0) {
      // A read that never waits gives the event loop no turn, and a piece of
      // copies can stand for gigabytes of work: a turn per read, as a
      // thread-pool read gave, so signals and timers are served.
      if (pos + end > 0) await nextTurn();
      readExactSync(img, pos + end, n, buf.subarray(end, end + n));
      end += n;
    }
    const atEof = pos + end >= size;
    if (pos === 0 && start === 0 && preamble > 0) {
      if (end < preamble) {
        if (end > 0) yield buf.subarray(0, end);
        return;
      }
      yield buf.subarray(0, preamble);
      start = preamble;
    }
    let p = start;
    let want = 0; // size of the first frame not whole in the buffer
    while (end - p >= FRAME_HEADER_LEN) {
      const len = buf.readUInt32BE(p);
      if (len > MAX_FRAME) {
        // Not a frame this reader can hold: let the decoder say so.
        p = end;
        break;
      }
      if (end - p < FRAME_HEADER_LEN + len) {
        want = FRAME_HEADER_LEN + len;
        break;
      }
      p += FRAME_HEADER_LEN + len;
    }
    if (atEof) p = end;
    if (p > start) yield buf.subarray(start, p);
    if (atEof) return;
    // Keep the part of a frame that did not fit: move it to the front and read behind it.
    const left = end - p;
    const need = Math.max(want, FRAME_HEADER_LEN, Math.min(chunk, size - (pos + p)));
    if (need > buf.length || (!reuse && p > 0)) {
      const next = Buffer.allocUnsafe(Math.max(need, reuse ? 0 : Math.min(buf.length, size - (pos + p))));
      buf.copy(next, 0, p, end);
      buf = next;
    } else if (left > 0) {
      buf.copy(buf, 0, p, end);
    }
    pos += p;
    start = 0;
    end = left;
  }
}
