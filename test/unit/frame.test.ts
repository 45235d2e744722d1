import { describe, expect, test } from 'vitest';
import { fc, test as fcTest } from '@fast-check/vitest';
import { encodeFrame, FRAME_HEADER_LEN, FrameDecoder, FrameTooLargeError } from '../../src/bytes/frame.js';
import { MAX_FRAME } from '../../src/core/limits.js';
import { SyncError } from '../../src/core/errors.js';

/**
 * Payloads that exercise the edge cases: one byte, header-sized, and a few
 * hundred bytes. Zero-length frames have their own tests below (a decoder bug).
 */
const PAYLOADS: Uint8Array[] = [
  Uint8Array.of(0x42),
  Uint8Array.of(1, 2, 3, 4),
  Uint8Array.from({ length: 37 }, (_, i) => (i * 7) & 0xff),
  Uint8Array.from({ length: 300 }, (_, i) => (i * 31 + 5) & 0xff),
];

function stream(payloads: readonly Uint8Array[]): Buffer {
  return Buffer.concat(payloads.map((p) => encodeFrame(p)));
}

function hex(list: readonly Uint8Array[]): string[] {
  return list.map((p) => Buffer.from(p).toString('hex'));
}

/** Feed `chunks` to a fresh decoder, returning every payload produced (copied, so later pushes cannot alias them). */
function decodeAll(chunks: readonly Uint8Array[], maxFrame?: number): Uint8Array[] {
  const d = new FrameDecoder(maxFrame);
  const out: Uint8Array[] = [];
  for (const c of chunks) for (const p of d.push(c)) out.push(Uint8Array.from(p));
  d.end();
  return out;
}

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(SyncError);
    return (e as SyncError).code;
  }
  return undefined;
}

describe('encodeFrame', () => {
  test('writes a u32 big-endian length, then the payload', () => {
    expect(encodeFrame(Uint8Array.of(0xaa, 0xbb, 0xcc)).toString('hex')).toBe('00000003aabbcc');
    expect(encodeFrame(new Uint8Array(0)).toString('hex')).toBe('00000000');
    expect(encodeFrame(new Uint8Array(0x010203)).subarray(0, FRAME_HEADER_LEN).toString('hex')).toBe('00010203');
  });
});

describe('FrameDecoder: any split of the stream gives the same frames', () => {
  const all = stream(PAYLOADS);
  const want = hex(PAYLOADS);

  test('the whole stream in one push', () => {
    expect(hex(decodeAll([all]))).toEqual(want);
  });

  test('every 2-way split point', () => {
    for (let i = 0; i <= all.length; i++) {
      expect(hex(decodeAll([all.subarray(0, i), all.subarray(i)])), `split at ${i}`).toEqual(want);
    }
  });

  test('byte by byte', () => {
    const chunks = Array.from(all, (b) => Uint8Array.of(b));
    expect(hex(decodeAll(chunks))).toEqual(want);
  });

  test('a frame is returned as soon as its last byte arrives, not later', () => {
    const one = encodeFrame(Uint8Array.of(9, 8, 7));
    const d = new FrameDecoder();
    for (let i = 0; i < one.length - 1; i++) expect(d.push(one.subarray(i, i + 1))).toEqual([]);
    expect(d.pending).toBe(one.length - 1 - FRAME_HEADER_LEN);
    expect(hex(d.push(one.subarray(one.length - 1)))).toEqual(['090807']);
    expect(d.pending).toBe(0);
    expect(d.bytesIn).toBe(one.length);
  });

  test('several frames in one chunk, and chunks that end and start mid-frame', () => {
    const d = new FrameDecoder();
    // Cut so that one chunk carries the tail of one frame, two whole frames and the head of the next.
    const cut1 = 4 + 1 + 4 + 4 + 2; // inside the header of PAYLOADS[2]
    const cut2 = all.length - 150; // inside the payload of the last frame
    const got = [...d.push(all.subarray(0, cut1)), ...d.push(all.subarray(cut1, cut2)), ...d.push(all.subarray(cut2))];
    expect(hex(got)).toEqual(want);
    expect(() => d.end()).not.toThrow();
  });

  test('empty pushes change nothing', () => {
    const d = new FrameDecoder();
    expect(d.push(new Uint8Array(0))).toEqual([]);
    expect(hex(d.push(encodeFrame(Uint8Array.of(5))))).toEqual(['05']);
    expect(d.push(new Uint8Array(0))).toEqual([]);
    expect(() => d.end()).not.toThrow();
  });

  fcTest.prop([fc.array(fc.uint8Array({ minLength: 1, maxLength: 200 }), { maxLength: 12 }), fc.array(fc.integer({ min: 1, max: 64 }), { maxLength: 12 })])(
    'volatile input (one read buffer filled again for every chunk): what stays buffered is its own copy',
    (payloads, sizes) => {
      const s = stream(payloads);
      const d = new FrameDecoder();
      const read = new Uint8Array(64);
      const got: string[] = [];
      for (let at = 0, k = 0; at < s.length; k++) {
        const n = Math.min(sizes.length > 0 ? sizes[k % sizes.length]! : 64, s.length - at);
        read.set(s.subarray(at, at + n));
        // Payloads still in the read buffer are used before the next read, as a caller that copies them does.
        for (const p of d.push(read.subarray(0, n), undefined, true)) got.push(Buffer.from(p).toString('hex'));
        read.fill(0xee);
        at += n;
      }
      expect(got).toEqual(hex(payloads));
    },
  );

  fcTest.prop([fc.array(fc.uint8Array({ minLength: 1, maxLength: 200 }), { maxLength: 12 }), fc.array(fc.nat(), { maxLength: 12 })])(
    'random frames cut at random points',
    (payloads, cuts) => {
      const s = stream(payloads);
      const points = [...new Set(cuts.map((c) => (s.length === 0 ? 0 : c % (s.length + 1))))].sort((a, b) => a - b);
      const chunks: Uint8Array[] = [];
      let prev = 0;
      for (const p of points) {
        chunks.push(s.subarray(prev, p));
        prev = p;
      }
      chunks.push(s.subarray(prev));
      expect(hex(decodeAll(chunks))).toEqual(hex(payloads));
    },
  );
});

describe('FrameDecoder: the payload allocator', () => {
  test('only payloads handed out take its memory: a header split across chunks is joined elsewhere', () => {
    // A lending reader (net/connection.ts) gets lent memory back only with the payloads it hands out.
    const given: Uint8Array[] = [];
    const d = new FrameDecoder(MAX_FRAME, (n) => {
      const m = new Uint8Array(n);
      given.push(m);
      return m;
    });
    const payloads = [Buffer.from('hello world'), Buffer.alloc(600, 7), Buffer.from('x')];
    const stream = Buffer.concat(payloads.map((p) => encodeFrame(p)));
    // Cuts inside the first and third headers and inside the second payload.
    const cuts = [0, 2, 3, 20, 300, 623, 626, stream.length];
    const out: Uint8Array[] = [];
    for (let i = 1; i < cuts.length; i++) out.push(...d.push(stream.subarray(cuts[i - 1], cuts[i])));
    expect(out.map((o) => Buffer.from(o))).toEqual(payloads);
    expect(given.length).toBeGreaterThan(0);
    for (const g of given) expect(out.some((o) => o.buffer === g.buffer)).toBe(true);
  });
});

describe('FrameDecoder: zero-length frames', () => {
  test('an empty frame followed by more bytes in the same push decodes to an empty payload', () => {
    const d = new FrameDecoder();
    expect(hex(d.push(Buffer.concat([encodeFrame(new Uint8Array(0)), encodeFrame(Uint8Array.of(7))])))).toEqual(['', '07']);
  });

  // Regression: when a push ends exactly at the end of a zero-length frame's
  // header, take(0) once read past the buffered chunks and threw a TypeError.
  test('an empty frame at the end of a push decodes to an empty payload', () => {
    const d = new FrameDecoder();
    expect(hex(d.push(encodeFrame(new Uint8Array(0))))).toEqual(['']);
  });

  // Same bug, reached through every split point of a stream holding an empty frame.
  test('every 2-way split of a stream with an empty frame in it', () => {
    const payloads = [Uint8Array.of(1, 2), new Uint8Array(0), Uint8Array.of(3)];
    const all = stream(payloads);
    for (let i = 0; i <= all.length; i++) expect(hex(decodeAll([all.subarray(0, i), all.subarray(i)]))).toEqual(['0102', '', '03']);
  });
});

describe('FrameDecoder: length limit', () => {
  test('the default limit is MAX_FRAME (8 MiB)', () => {
    expect(MAX_FRAME).toBe(8 * 1024 * 1024);
    const d = new FrameDecoder();
    const h = Buffer.alloc(4);
    h.writeUInt32BE(MAX_FRAME + 1);
    expect(codeOf(() => d.push(h))).toBe('ERR_FRAME_TOO_LARGE');
  });

  test('an oversized length is refused from the header alone, before any payload is buffered', () => {
    const d = new FrameDecoder(100);
    let err: unknown;
    try {
      d.push(Uint8Array.of(0, 0, 0, 101));
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(FrameTooLargeError);
    expect(err).toMatchObject({ code: 'ERR_FRAME_TOO_LARGE', details: { length: 101, limit: 100 } });
    expect(d.pending).toBe(0);
  });

  test('the header is checked even when it arrives one byte at a time', () => {
    const d = new FrameDecoder(100);
    expect(d.push(Uint8Array.of(0))).toEqual([]);
    expect(d.push(Uint8Array.of(0))).toEqual([]);
    expect(d.push(Uint8Array.of(1))).toEqual([]);
    expect(codeOf(() => d.push(Uint8Array.of(0)))).toBe('ERR_FRAME_TOO_LARGE');
  });

  test('0xffffffff is read as an unsigned length, not as -1', () => {
    const d = new FrameDecoder();
    let err: unknown;
    try {
      d.push(Uint8Array.of(0xff, 0xff, 0xff, 0xff));
    } catch (e) {
      err = e;
    }
    expect(err).toMatchObject({ code: 'ERR_FRAME_TOO_LARGE', details: { length: 0xffffffff } });
  });

  test('a frame of exactly the limit is accepted', () => {
    const p = new Uint8Array(100).fill(3);
    expect(decodeAll([encodeFrame(p)], 100)).toHaveLength(1);
  });

  test('frames before an oversized one are delivered by earlier pushes', () => {
    const d = new FrameDecoder(10);
    expect(hex(d.push(encodeFrame(Uint8Array.of(1))))).toEqual(['01']);
    expect(codeOf(() => d.push(Uint8Array.of(0, 0, 0, 11, 0)))).toBe('ERR_FRAME_TOO_LARGE');
  });
});

describe('FrameDecoder: truncated streams', () => {
  const frame = encodeFrame(Uint8Array.of(1, 2, 3, 4, 5, 6));

  test('end() inside the header raises ERR_UNEXPECTED_EOF', () => {
    for (let n = 1; n < FRAME_HEADER_LEN; n++) {
      const d = new FrameDecoder();
      d.push(frame.subarray(0, n));
      let err: unknown;
      try {
        d.end();
      } catch (e) {
        err = e;
      }
      expect(err).toMatchObject({ code: 'ERR_UNEXPECTED_EOF', details: { what: 'frame header', expected: 4, available: n } });
    }
  });

  test('end() inside the payload raises ERR_UNEXPECTED_EOF with the missing length', () => {
    for (let n = FRAME_HEADER_LEN; n < frame.length; n++) {
      const d = new FrameDecoder();
      d.push(frame.subarray(0, n));
      let err: unknown;
      try {
        d.end();
      } catch (e) {
        err = e;
      }
      expect(err).toMatchObject({ code: 'ERR_UNEXPECTED_EOF', details: { what: 'frame payload', expected: 6, available: n - FRAME_HEADER_LEN } });
    }
  });

  test('end() after whole frames is fine', () => {
    const d = new FrameDecoder();
    d.push(Buffer.concat([frame, encodeFrame(Uint8Array.of(9))]));
    expect(() => d.end()).not.toThrow();
  });

  test('end() on a fresh decoder is fine', () => {
    expect(() => new FrameDecoder().end()).not.toThrow();
  });
});

describe('incomplete frames', () => {
  test('take their memory when the header is read, and keep no pushed chunk: a reader may reuse its read buffer', () => {
    const payload = Uint8Array.from({ length: 100_000 }, (_, i) => (i * 7) & 255);
    const framed = encodeFrame(payload);
    const asked: number[] = [];
    const dec = new FrameDecoder(MAX_FRAME, (n) => {
      asked.push(n);
      return new Uint8Array(n);
    });
    // One read buffer, overwritten after every push (as a socket reading into a static buffer does).
    const read = new Uint8Array(7000);
    const out: Uint8Array[] = [];
    for (let p = 0; p < framed.length; p += read.length) {
      const n = Math.min(read.length, framed.length - p);
      read.set(framed.subarray(p, p + n));
      out.push(...dec.push(read.subarray(0, n)));
      read.fill(0xee);
      if (p + n < framed.length) expect(dec.pending).toBe(p + n - 4);
    }
    expect(asked).toEqual([payload.length]);
    expect(out.length).toBe(1);
    expect(Buffer.from(out[0]!).equals(Buffer.from(payload))).toBe(true);
    expect(dec.pending).toBe(0);
    dec.end();
  });

  test('a stream that ends inside one reports the bytes it had', () => {
    const dec = new FrameDecoder();
    dec.push(encodeFrame(new Uint8Array(50)).subarray(0, 30));
    expect(dec.pending).toBe(26);
    expect(() => dec.end()).toThrow(/frame payload/);
  });
});

describe('FrameDecoder: at most `max` payloads a push, the rest held for more()', () => {
  fcTest.prop([fc.array(fc.uint8Array({ maxLength: 40 }), { maxLength: 60 }), fc.array(fc.integer({ min: 1, max: 50 }), { minLength: 1, maxLength: 8 }), fc.integer({ min: 1, max: 5 })])(
    'volatile chunks cut anywhere, taken a few at a time: the same payloads in the same order, never more than max at once',
    (payloads, cuts, max) => {
      const all = stream(payloads);
      const d = new FrameDecoder();
      const got: string[] = [];
      const take = (list: Uint8Array[]): void => {
        expect(list.length).toBeLessThanOrEqual(max);
        for (const p of list) got.push(Buffer.from(p).toString('hex'));
      };
      // One read buffer, overwritten by every chunk, as a socket reading into its own buffer.
      const readBuf = Buffer.alloc(all.length + 1);
      let at = 0;
      for (let k = 0; at < all.length; k++) {
        const n = Math.min(cuts[k % cuts.length]!, all.length - at);
        readBuf.fill(0xee);
        all.copy(readBuf, 0, at, at + n);
        at += n;
        take(d.push(readBuf.subarray(0, n), undefined, true, max));
        readBuf.fill(0xdd);
        // Held frames come out with more(), between reads or (every other read) after the next one.
        if (k % 2 === 1) while (d.held) take(d.more(max));
      }
      while (d.held) take(d.more(max));
      expect(got).toEqual(hex(payloads));
      d.end();
    },
  );

  test('held is set only while complete frames may remain, and more() returns them in order', () => {
    const d = new FrameDecoder();
    const first = d.push(stream(PAYLOADS), undefined, false, 1);
    expect(hex(first)).toEqual(hex(PAYLOADS.slice(0, 1)));
    expect(d.held).toBe(true);
    expect(hex(d.more(2))).toEqual(hex(PAYLOADS.slice(1, 3)));
    expect(hex(d.more(5))).toEqual(hex(PAYLOADS.slice(3)));
    expect(d.held).toBe(false);
    expect(d.pending).toBe(0);
  });
});
