/**
 * In-memory convenience over the streaming engine: the three verbs over byte
 * arrays. Handy for tests and small data; images go through the streaming API.
 */
import { DeltaMatcher } from './matcher.js';
import type { DeltaOp } from './ops.js';
import { PatchPlanner } from './patch.js';
import { Signature, SignatureGenerator, makeSignatureParams, type SignatureParams } from './signature.js';
import type { StrongAlg } from './strong.js';

/** Options for computing a signature in memory. */
export interface SignatureOptions {
  blockSize?: number | undefined;
  strongAlg?: StrongAlg | undefined;
  strongLen?: number | undefined;
  /** Seed for the strong hash; a fixed zero seed if omitted (callers that face adversaries pass a random one). */
  seed?: Uint8Array | undefined;
}

/** Signature of `basis`, fed in `chunk`-byte pieces. */
export function signatureOf(basis: Uint8Array, opts: SignatureOptions = {}, chunk = 1 << 20): Signature {
  const params: SignatureParams = makeSignatureParams(basis.length, opts.seed ?? new Uint8Array(16), opts);
  const gen = new SignatureGenerator(params);
  const sig = new Signature(params);
  for (let p = 0; p < basis.length; p += chunk) for (const c of gen.push(basis.subarray(p, p + chunk))) sig.addChunk(c);
  for (const c of gen.end()) sig.addChunk(c);
  return sig;
}

/** Delta ops turning the signature's image into `target`, fed in `chunk`-byte pieces. */
export function diff(sig: Signature, target: Uint8Array, chunk = 1 << 20): DeltaOp[] {
  const m = new DeltaMatcher(sig);
  const ops: DeltaOp[] = [];
  for (let p = 0; p < target.length; p += chunk) ops.push(...m.push(target.subarray(p, p + chunk)));
  ops.push(...m.end());
  return ops;
}

/** Apply ops to `basis`, checking every bound; the result must be `targetSize` bytes. */
export function applyDelta(basis: Uint8Array, ops: Iterable<DeltaOp>, targetSize: number): Uint8Array {
  const planner = new PatchPlanner({ basisSize: basis.length, maxOutput: targetSize });
  const out = new Uint8Array(targetSize);
  for (const op of ops) {
    const w = planner.plan(op);
    if (w.kind === 'copy') out.set(basis.subarray(w.src, w.src + w.length), w.dst);
    else out.set(w.data, w.dst);
  }
  planner.finish(targetSize);
  return out;
}
