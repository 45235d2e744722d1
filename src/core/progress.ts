/**
 * Progress reports of long operations, shared by every layer that reads or
 * writes an image (files, network, CLI): a type only, so it sits at the bottom.
 */

/** Progress of a long operation. */
export interface Progress {
  phase: string;
  /** Bytes processed so far. */
  done: number;
  /** Bytes to process in all. */
  total: number;
  /** Optional running counters. */
  matched?: number;
  literal?: number;
}

/** Receives progress; called at most once per read chunk. */
export type ProgressFn = (p: Progress) => void;
