/**
 * The file decoders are incremental: however a valid signature or delta file
 * is cut into pieces, they must produce the same result as when fed whole.
 * Covers every 2-way split, byte-by-byte feeding, every 3-way split of the
 * smallest files, and pseudo-random chunkings.
 */
import { describe, expect, test } from 'vitest';
import { DeltaFileDecoder } from '../../src/format/deltafile.js';
import { SignatureFileDecoder } from '../../src/format/sigfile.js';
import { deltaBytes, frameOffsets, goldenCases, signatureBytes, streamBytes } from '../helpers/golden.js';

const hex = (b: Uint8Array | null): string | null => (b === null ? null : Buffer.from(b.buffer, b.byteOffset, b.length).toString('hex'));

/** Decode a signature file fed as `pieces`; a plain value for comparison. */
function sigResult(pieces: Uint8Array[]): unknown {
  const d = new SignatureFileDecoder();
  for (const p of pieces) d.push(p);
  const { signature: s, basisHash } = d.end();
  return {
    params: { ...s.params, seed: hex(s.params.seed) },
    blockCount: s.blockCount,
    received: s.receivedBlocks,
    weak: hex(new Uint8Array(s.weak.buffer, s.weak.byteOffset, s.weak.byteLength)),
    strong: hex(s.strong),
    basisHash: hex(basisHash),
  };
}

/** Decode a delta file fed as `pieces`; the events as plain values (each push's events kept in order). */
function deltaResult(pieces: Uint8Array[]): unknown[] {
  const d = new DeltaFileDecoder();
  const out: unknown[] = [];
  for (const p of pieces) {
    for (const ev of d.push(p)) {
      if (ev.kind === 'header') out.push({ header: { ...ev.header, basisHash: hex(ev.header.basisHash) } });
      else if (ev.kind === 'end') out.push({ end: { ...ev.trailer, targetHash: hex(ev.trailer.targetHash) } });
      // Copy literal bytes now: a piece may be a view that the caller reuses.
      else out.push(ev.op.kind === 'copy' ? { copy: [ev.op.offset, ev.op.length] } : { literal: hex(ev.op.data) });
    }
  }
  d.end();
  return out;
}

/** `bytes` cut at the given offsets (each piece a fresh copy, so no piece shares memory with another). */
function cut(bytes: Uint8Array, at: number[]): Uint8Array[] {
  const pts = [0, ...at, bytes.length];
  const out: Uint8Array[] = [];
  for (let i = 0; i + 1 < pts.length; i++) out.push(Uint8Array.from(bytes.subarray(pts[i]!, pts[i + 1]!)));
  return out;
}

/** Offsets to try: all of them for small files, else a stride plus every frame boundary +-3. */
function splitPoints(bytes: Uint8Array): number[] {
  if (bytes.length <= 8192) return Array.from({ length: bytes.length + 1 }, (_, i) => i);
  const pts = new Set<number>();
  for (let i = 0; i <= 16; i++) pts.add(i);
  for (let i = 0; i <= bytes.length; i += 97) pts.add(i);
  for (const f of frameOffsets(bytes)) for (let d = -3; d <= 8; d++) if (f + d >= 0 && f + d <= bytes.length) pts.add(f + d);
  for (let i = bytes.length - 40; i <= bytes.length; i++) pts.add(i);
  return [...pts].sort((a, b) => a - b);
}

/** Chunk sizes from a seeded stream, 1..maxChunk. */
function randomCuts(len: number, seed: number, maxChunk: number): number[] {
  const r = streamBytes(seed, 4096);
  const at: number[] = [];
  let p = 0;
  for (let i = 0; ; i++) {
    p += 1 + (r.readUInt16BE((2 * i) % 4094) % maxChunk);
    if (p >= len) break;
    at.push(p);
  }
  return at;
}

const files = goldenCases().map((c) => ({ name: c.name, sig: signatureBytes(c.basis, c.spec), delta: deltaBytes(c.basis, c.target, c.spec, c.compress) }));

describe.each(files)('$name', ({ sig, delta }) => {
  const sigWant = sigResult([sig]);
  const deltaWant = deltaResult([delta]);

  test('signature: every 2-way split decodes to the same signature', () => {
    for (const k of splitPoints(sig)) expect(sigResult(cut(sig, [k])), `split at ${k}`).toEqual(sigWant);
  });

  test('signature: byte by byte', () => {
    expect(sigResult(cut(sig, Array.from({ length: sig.length - 1 }, (_, i) => i + 1)))).toEqual(sigWant);
  });

  test('signature: pseudo-random chunkings, with empty pushes in between', () => {
    for (const [seed, max] of [
      [11, 7],
      [12, 64],
      [13, 1000],
    ] as const) {
      const pieces = cut(sig, randomCuts(sig.length, seed, max)).flatMap((p) => [p, new Uint8Array(0)]);
      expect(sigResult(pieces)).toEqual(sigWant);
    }
  });

  test('delta: every 2-way split yields the same events', () => {
    for (const k of splitPoints(delta)) expect(deltaResult(cut(delta, [k])), `split at ${k}`).toEqual(deltaWant);
  });

  test('delta: byte by byte', () => {
    expect(deltaResult(cut(delta, Array.from({ length: delta.length - 1 }, (_, i) => i + 1)))).toEqual(deltaWant);
  });

  test('delta: pseudo-random chunkings, with empty pushes in between', () => {
    for (const [seed, max] of [
      [21, 5],
      [22, 100],
      [23, 3000],
    ] as const) {
      const pieces = cut(delta, randomCuts(delta.length, seed, max)).flatMap((p) => [new Uint8Array(0), p]);
      expect(deltaResult(pieces)).toEqual(deltaWant);
    }
  });
});

describe('3-way splits of the tiny files', () => {
  const tiny = files.find((f) => f.name === 'tiny')!;

  test('signature: every pair of cut points', () => {
    const want = sigResult([tiny.sig]);
    for (let i = 0; i <= tiny.sig.length; i++) {
      for (let j = i; j <= tiny.sig.length; j++) expect(sigResult(cut(tiny.sig, [i, j])), `cuts at ${i}, ${j}`).toEqual(want);
    }
  });

  test('delta: every pair of cut points', () => {
    const want = deltaResult([tiny.delta]);
    for (let i = 0; i <= tiny.delta.length; i++) {
      for (let j = i; j <= tiny.delta.length; j++) expect(deltaResult(cut(tiny.delta, [i, j])), `cuts at ${i}, ${j}`).toEqual(want);
    }
  });
});

describe('events surface as soon as their frame is complete', () => {
  test('each delta op is returned by the push that completes its frame, not later', () => {
    const c = files.find((f) => f.name === 'edits')!;
    const offs = frameOffsets(c.delta);
    const d = new DeltaFileDecoder();
    let seen = 0;
    for (let i = 0; i + 1 < offs.length; i++) {
      // Feed up to one byte short of the frame's end: nothing new; then the last byte: exactly one event.
      const end = offs[i + 1]!;
      const start = i === 0 ? 0 : offs[i]!;
      expect(d.push(c.delta.subarray(start, end - 1)).length, `frame ${i} early`).toBe(0);
      const ev = d.push(c.delta.subarray(end - 1, end));
      expect(ev.length, `frame ${i}`).toBe(1);
      seen++;
    }
    d.end();
    expect(seen).toBe(offs.length - 1);
  });
});
