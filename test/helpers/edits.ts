/** Random edits (insert, delete, overwrite, move) for property tests. */
import { fc } from '@fast-check/vitest';

/** An edit applied to a basis to make a target. */
export const edit = fc.oneof(
  fc.record({ kind: fc.constant('insert' as const), at: fc.nat(), data: fc.uint8Array({ minLength: 1, maxLength: 300 }) }),
  fc.record({ kind: fc.constant('delete' as const), at: fc.nat(), len: fc.integer({ min: 1, max: 300 }) }),
  fc.record({ kind: fc.constant('overwrite' as const), at: fc.nat(), data: fc.uint8Array({ minLength: 1, maxLength: 300 }) }),
  fc.record({ kind: fc.constant('move' as const), from: fc.nat(), to: fc.nat(), len: fc.integer({ min: 1, max: 2000 }) }),
);
export type Edit = typeof edit extends fc.Arbitrary<infer T> ? T : never;

export function applyEdits(basis: Uint8Array, edits: Edit[]): Uint8Array {
  let b = Buffer.from(basis);
  for (const e of edits) {
    if (e.kind === 'insert') {
      const at = b.length === 0 ? 0 : e.at % (b.length + 1);
      b = Buffer.concat([b.subarray(0, at), Buffer.from(e.data), b.subarray(at)]);
    } else if (e.kind === 'delete') {
      if (b.length === 0) continue;
      const at = e.at % b.length;
      b = Buffer.concat([b.subarray(0, at), b.subarray(Math.min(b.length, at + e.len))]);
    } else if (e.kind === 'overwrite') {
      if (b.length === 0) continue;
      const at = e.at % b.length;
      b = Buffer.from(b);
      b.set(e.data.subarray(0, b.length - at), at);
    } else {
      if (b.length === 0) continue;
      const from = e.from % b.length;
      const piece = Buffer.from(b.subarray(from, from + e.len));
      const rest = Buffer.concat([b.subarray(0, from), b.subarray(from + piece.length)]);
      const to = rest.length === 0 ? 0 : e.to % (rest.length + 1);
      b = Buffer.concat([rest.subarray(0, to), piece, rest.subarray(to)]);
    }
  }
  return b;
}

