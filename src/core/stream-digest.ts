/**
 * Running digests of a byte stream: what a framed file's end record carries
 * (protocol/SPEC.md §2.4). SHA-256 for signature files and version 1 delta
 * files; keyed BLAKE3 for delta files from version 2.
 *
 * A delta file is mostly literal data, so its digest hashes as many bytes as
 * the delta carries. OpenSSL's SHA-256 does about 1.6 GB/s here (326 ms for
 * 512 MiB, on the main thread of `resync delta` and of `resync patch`);
 * BLAKE3 through @napi-rs/blake-hash, fed large pieces, about 8 GB/s. Fed a
 * frame at a time (a 4-byte length, then a payload of a few KiB) that BLAKE3
 * falls to half SHA-256's speed: it can only hash chunks side by side within
 * one update. Small updates are therefore gathered into a staging buffer
 * and hashed a staging buffer at a time.
 */
import { createHash, type Hash } from 'node:crypto';
import { blake3 as blake3Js } from '@noble/hashes/blake3.js';
import { nativeBlake3 } from './strong.js';

/** The algorithms a file digest may use. */
export type StreamDigestAlg = 'sha256' | 'blake3';

/** The key of the BLAKE3 file digest: these 32 ASCII bytes (SPEC §2.4). */
export const FILE_DIGEST_KEY = Buffer.from('resync file digest, BLAKE3 keyed', 'latin1');

/** A running digest. */
export interface StreamDigest {
  update(b: Uint8Array): void;
  /**
   * The digest of everything so far, the state unchanged so that updates
   * may go on; with `tail`, of everything so far followed by `tail`, and
   * then nothing may follow (the end record's own bytes, hashed last).
   */
  digest(tail?: Uint8Array): Buffer;
}

/** Updates of at least this many bytes go to BLAKE3 directly; smaller ones are gathered. */
const DIRECT = 16 * 1024;
/** Bytes gathered before they are hashed. */
const STAGE = 128 * 1024;

class Sha256Digest implements StreamDigest {
  private readonly h: Hash = createHash('sha256');
  update(b: Uint8Array): void {
    this.h.update(b);
  }
  digest(tail?: Uint8Array): Buffer {
    const c = this.h.copy();
    if (tail) c.update(tail);
    return c.digest();
  }
}

interface Blake3Sink {
  update(b: Uint8Array): void;
  /** Digest so far, without ending the hash. */
  snapshot(): Buffer;
}

/** Keyed BLAKE3 with small updates gathered (see the module comment). */
class Blake3Digest implements StreamDigest {
  private readonly stage = Buffer.allocUnsafe(STAGE);
  private used = 0;

  constructor(private readonly sink: Blake3Sink) {}

  update(b: Uint8Array): void {
    if (b.length >= DIRECT) {
      this.flush();
      this.sink.update(b);
      return;
    }
    if (this.used + b.length > STAGE) this.flush();
    this.stage.set(b, this.used);
    this.used += b.length;
  }

  digest(tail?: Uint8Array): Buffer {
    if (tail) this.update(tail);
    this.flush();
    return this.sink.snapshot();
  }

  private flush(): void {
    if (this.used === 0) return;
    this.sink.update(this.stage.subarray(0, this.used));
    this.used = 0;
  }
}

/** BLAKE3 keyed with FILE_DIGEST_KEY: native where @napi-rs/blake-hash loads, else @noble/hashes (slowly). */
function blake3Sink(forceJs: boolean): Blake3Sink {
  const mod = forceJs ? null : nativeBlake3();
  if (mod) {
    const h = mod.Blake3Hasher.newKeyed(FILE_DIGEST_KEY);
    return {
      // The binding takes Buffers only.
      update: (b) => h.update(Buffer.isBuffer(b) ? b : Buffer.from(b.buffer, b.byteOffset, b.byteLength)),
      snapshot: () => h.digestBuffer(),
    };
  }
  const h = blake3Js.create({ key: FILE_DIGEST_KEY });
  return {
    update: (b) => h.update(b),
    snapshot: () => Buffer.from(h.clone().digest()),
  };
}

/** A new running digest; `forceJs` skips the native BLAKE3 (for tests). */
export function createStreamDigest(alg: StreamDigestAlg, forceJs = false): StreamDigest {
  return alg === 'sha256' ? new Sha256Digest() : new Blake3Digest(blake3Sink(forceJs));
}
