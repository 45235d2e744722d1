/** Delta operations: copy a range of the basis, or insert literal bytes. */

/** Copy `length` bytes from basis offset `offset` to the output. */
export interface CopyOp {
  readonly kind: 'copy';
  readonly offset: number;
  readonly length: number;
}

/** Append `data` to the output. */
export interface LiteralOp {
  readonly kind: 'literal';
  readonly data: Uint8Array;
}

/** One delta operation, in output order. */
export type DeltaOp = CopyOp | LiteralOp;

/** Counters every producer and consumer of ops keeps. */
export interface DeltaStats {
  /** Bytes of the new image covered by copies. */
  matchedBytes: number;
  /** Bytes of the new image sent as literals. */
  literalBytes: number;
  copyOps: number;
  literalOps: number;
}

/** Fresh zeroed counters. */
export function emptyStats(): DeltaStats {
  return { matchedBytes: 0, literalBytes: 0, copyOps: 0, literalOps: 0 };
}
