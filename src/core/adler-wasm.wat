;; Adler-32 with 128-bit SIMD.
;;
;; Built into src/core/adler-wasm-bytes.ts by scripts/build-wasm.mjs; loaded by
;; src/core/adler-wasm.ts. Exports `memory` and
;;
;;   adler32(ptr, len, init) -> i32
;;
;; the Adler-32 of memory[ptr, ptr + len) continued from the checksum `init`
;; (1 for a fresh sum): A = A0 + sum(x) mod 65521, B = B0 + sum of the running
;; A values mod 65521, result B << 16 | A. `init` must have both halves below
;; 65521 (the caller checks).
;;
;; Method. The input is cut into blocks of at most 128 chunks of 32 bytes
;; (4 KiB); each block starts from reduced A0, B0 and ends with one reduction.
;; For a block of N chunks, L = 32N bytes, chunk k holding x[k][0..31] with sum
;; S_k, the new sums are
;;
;;   A = A0 + sum_k S_k
;;   B = B0 + L*A0 + sum_j (L - j) x_j                      (j = 32k + i)
;;     = B0 + L*A0 + 32 * sum_k (N-1-k) S_k + sum_i (32 - i) * col_i
;;
;; where col_i = sum_k x[k][i]. The middle term equals 32 * sum_k P_k with P_k
;; the byte sum of the chunks before chunk k, so per chunk the loop only adds
;; the running byte sum to `ps` before adding the chunk's own byte sum to `s1`.
;; The last term needs the column sums alone: they are kept as 16-bit lanes and
;; multiplied by the descending weights 32..1 (i32x4.dot_i16x8_s) once per
;; block.
;;
;; Bounds (every lane is non-negative, so "fits" means below 2^31):
;;   col lanes     <= 255 * 128         = 32640        < 2^15 (signed 16-bit, so the signed dot is exact)
;;   dot lanes     <= 2 * 32640 * 32    = 2088960
;;   s1 lanes      <= 255 * 8 * 128     = 261120       (4 lanes share a chunk's 32 bytes)
;;   ps lanes      <= 255 * 8 * (0+1+...+127) = 16581120
;;   sum of 32*ps over lanes <= 32 * 255 * 32 * 8128    = 2122383360 < 2^31 (checked in the test with 0xFF)
;;   sum of weighted terms   <= 255 * 528 * 128         = 17233920
;; so one i32 lane sum of (ps << 5) + weighted never passes 2^32 (2139617280),
;; and the per-block combination is done in i64, where L*A0 + B0 + both sums is
;; far below 2^63. The scalar tail handles fewer than 32 bytes after the last
;; block, starting from reduced A, B: A < 65521 + 31*255, B < 65521 + 31*A,
;; both far below 2^32.
(module
  (memory (export "memory") 1)

  (func (export "adler32") (param $ptr i32) (param $len i32) (param $init i32) (result i32)
    (local $a i64)          ;; running A, reduced at each block end
    (local $b i64)          ;; running B, reduced at each block end
    (local $p i32)          ;; read position
    (local $vecEnd i32)     ;; end of the whole 32-byte chunks
    (local $end i32)        ;; end of the input
    (local $blockEnd i32)
    (local $s1 v128)        ;; per-lane byte sum of the block so far
    (local $ps v128)        ;; per-lane sum over chunks of s1 before that chunk
    (local $c0 v128)        ;; 16-bit column sums, bytes 0..7 of each chunk
    (local $c1 v128)        ;; bytes 8..15
    (local $c2 v128)        ;; bytes 16..23
    (local $c3 v128)        ;; bytes 24..31
    (local $v0 v128)
    (local $v1 v128)
    (local $e0 v128)
    (local $e1 v128)
    (local $e2 v128)
    (local $e3 v128)
    (local $t v128)
    (local $ta i32)         ;; tail: A as i32
    (local $tb i32)         ;; tail: B as i32

    (local.set $a (i64.extend_i32_u (i32.and (local.get $init) (i32.const 0xffff))))
    (local.set $b (i64.extend_i32_u (i32.shr_u (local.get $init) (i32.const 16))))
    (local.set $p (local.get $ptr))
    (local.set $end (i32.add (local.get $ptr) (local.get $len)))
    (local.set $vecEnd (i32.add (local.get $ptr) (i32.and (local.get $len) (i32.const -32))))

    (block $blocksDone
      (loop $blocks
        (br_if $blocksDone (i32.ge_u (local.get $p) (local.get $vecEnd)))
        ;; blockEnd = min(p + 4096, vecEnd)
        (local.set $blockEnd (i32.add (local.get $p) (i32.const 4096)))
        (if (i32.gt_u (local.get $blockEnd) (local.get $vecEnd))
          (then (local.set $blockEnd (local.get $vecEnd))))

        ;; B gains L * A0 for the block's L bytes (A0 and B0 are reduced here).
        (local.set $b
          (i64.add (local.get $b)
            (i64.mul (local.get $a)
              (i64.extend_i32_u (i32.sub (local.get $blockEnd) (local.get $p))))))

        (local.set $s1 (v128.const i32x4 0 0 0 0))
        (local.set $ps (v128.const i32x4 0 0 0 0))
        (local.set $c0 (v128.const i32x4 0 0 0 0))
        (local.set $c1 (v128.const i32x4 0 0 0 0))
        (local.set $c2 (v128.const i32x4 0 0 0 0))
        (local.set $c3 (v128.const i32x4 0 0 0 0))

        (loop $chunks
          (local.set $v0 (v128.load align=1 (local.get $p)))
          (local.set $v1 (v128.load offset=16 align=1 (local.get $p)))
          (local.set $ps (i32x4.add (local.get $ps) (local.get $s1)))
          (local.set $e0 (i16x8.extend_low_i8x16_u (local.get $v0)))
          (local.set $e1 (i16x8.extend_high_i8x16_u (local.get $v0)))
          (local.set $e2 (i16x8.extend_low_i8x16_u (local.get $v1)))
          (local.set $e3 (i16x8.extend_high_i8x16_u (local.get $v1)))
          (local.set $c0 (i16x8.add (local.get $c0) (local.get $e0)))
          (local.set $c1 (i16x8.add (local.get $c1) (local.get $e1)))
          (local.set $c2 (i16x8.add (local.get $c2) (local.get $e2)))
          (local.set $c3 (i16x8.add (local.get $c3) (local.get $e3)))
          ;; the chunk's byte sum: four 16-bit lanes of at most 255 each per
          ;; lane, then pairs widened to 32 bits by a dot with ones
          (local.set $t
            (i16x8.add
              (i16x8.add (local.get $e0) (local.get $e1))
              (i16x8.add (local.get $e2) (local.get $e3))))
          (local.set $s1
            (i32x4.add (local.get $s1)
              (i32x4.dot_i16x8_s (local.get $t) (v128.const i16x8 1 1 1 1 1 1 1 1))))
          (local.set $p (i32.add (local.get $p) (i32.const 32)))
          (br_if $chunks (i32.lt_u (local.get $p) (local.get $blockEnd))))

        ;; t = (ps << 5) + weighted column sums; one lane sum each for A and B.
        (local.set $t
          (i32x4.add
            (i32x4.shl (local.get $ps) (i32.const 5))
            (i32x4.add
              (i32x4.add
                (i32x4.dot_i16x8_s (local.get $c0) (v128.const i16x8 32 31 30 29 28 27 26 25))
                (i32x4.dot_i16x8_s (local.get $c1) (v128.const i16x8 24 23 22 21 20 19 18 17)))
              (i32x4.add
                (i32x4.dot_i16x8_s (local.get $c2) (v128.const i16x8 16 15 14 13 12 11 10 9))
                (i32x4.dot_i16x8_s (local.get $c3) (v128.const i16x8 8 7 6 5 4 3 2 1))))))
        (local.set $b
          (i64.rem_u
            (i64.add (local.get $b)
              (i64.extend_i32_u
                (i32.add
                  (i32.add (i32x4.extract_lane 0 (local.get $t)) (i32x4.extract_lane 1 (local.get $t)))
                  (i32.add (i32x4.extract_lane 2 (local.get $t)) (i32x4.extract_lane 3 (local.get $t))))))
            (i64.const 65521)))
        (local.set $a
          (i64.rem_u
            (i64.add (local.get $a)
              (i64.extend_i32_u
                (i32.add
                  (i32.add (i32x4.extract_lane 0 (local.get $s1)) (i32x4.extract_lane 1 (local.get $s1)))
                  (i32.add (i32x4.extract_lane 2 (local.get $s1)) (i32x4.extract_lane 3 (local.get $s1))))))
            (i64.const 65521)))
        (br $blocks)))

    ;; Scalar tail: fewer than 32 bytes.
    (local.set $ta (i32.wrap_i64 (local.get $a)))
    (local.set $tb (i32.wrap_i64 (local.get $b)))
    (block $tailDone
      (loop $tail
        (br_if $tailDone (i32.ge_u (local.get $p) (local.get $end)))
        (local.set $ta (i32.add (local.get $ta) (i32.load8_u (local.get $p))))
        (local.set $tb (i32.add (local.get $tb) (local.get $ta)))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (br $tail)))
    (i32.or
      (i32.shl (i32.rem_u (local.get $tb) (i32.const 65521)) (i32.const 16))
      (i32.rem_u (local.get $ta) (i32.const 65521))))
)
