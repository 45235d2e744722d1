/**
 * The worker side of io/hash-offload.ts: builds the whole-image hash of the
 * pieces the main thread reads into shared buffers, while the main thread
 * scans them. Loaded as a worker script of its own (dist/src/io/hash-worker.js,
 * or dist/resync-hash-worker.cjs beside the bundle); on the main thread,
 * importing it does nothing.
 *
 * Messages in: [slot, length, index, digests] (hash that many bytes of ring
 * buffer `slot`, except the blocks `index` whose digests are known, 32 bytes
 * each in `digests`), [-2, length, index, digests] (the main thread hashed
 * every block of the next `length` bytes itself), [-1, length] (a hole of
 * `length` zero bytes), or 'end'. Out: { free: slot }
 * once a slot's bytes are hashed, and { digest } after 'end'. A throw here
 * ends the worker with an 'error' event, which the main thread turns into a
 * typed error.
 */
import { isMainThread, parentPort, workerData } from 'node:worker_threads';
import { imageHashBuilder } from '../core/imagehash.js';
import type { StrongAlg } from '../core/strong.js';

/** workerData.role of an image hash worker. */
export const HASH_WORKER_ROLE = 'resync-image-hash';

/** What the main thread sends first, once it has the signature: { init }. */
export interface HashWorkerInit {
  size: number;
  blockSize: number;
  strongAlg: StrongAlg;
  seed: Uint8Array;
  ring: SharedArrayBuffer[];
}

type Message = { init: HashWorkerInit } | [number, number, Float64Array?, Uint8Array?] | 'end';

function run(): void {
  const port = parentPort!;
  let image: HashWorkerInit | null = null;
  let hash: ReturnType<typeof imageHashBuilder> | null = null;
  let ring: Uint8Array[] = [];
  // Tests make the worker fail at its Nth data piece to check that the failure surfaces.
  const faultAt = Number(process.env.RESYNC_TEST_HASH_WORKER_FAULT ?? 0);
  let pieces = 0;
  port.on('message', (m: Message) => {
    if (!Array.isArray(m) && typeof m === 'object') {
      image = m.init;
      hash = imageHashBuilder(image.size, image);
      ring = image.ring.map((b) => new Uint8Array(b));
      return;
    }
    if (!hash || !image) throw new Error('hash worker used before its init message');
    if (m === 'end') {
      port.postMessage({ digest: hash.digest() });
      port.close();
      return;
    }
    const [slot, length, index, digests] = m;
    if (slot === -1) {
      hash.updateZero(length);
      return;
    }
    if (slot === -2) {
      for (let k = 0; k < index!.length; k++) {
        const i = index![k]!;
        hash.pushDigest(i, Math.min(image.blockSize, image.size - i * image.blockSize), digests!.subarray(k * 32, k * 32 + 32));
      }
      return;
    }
    if (++pieces === faultAt) throw new Error('injected hash worker fault');
    for (let k = 0; k < index!.length; k++) hash.offer(index![k]!, digests!.subarray(k * 32, k * 32 + 32));
    hash.update(ring[slot]!.subarray(0, length));
    port.postMessage({ free: slot });
  });
}

if (!isMainThread && (workerData as { role?: string } | null)?.role === HASH_WORKER_ROLE) run();
