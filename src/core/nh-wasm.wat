;; NH sums of sub-blocks with 128-bit SIMD.
;;
;; Built into src/core/nh-wasm-bytes.ts by scripts/build-wasm.mjs; loaded by
;; src/core/subsum.ts. Exports `memory` and
;;
;;   nh(msg, key, size, count, out)
;;
;; For each of `count` sub-blocks of `size` bytes at memory[msg ..] (size a
;; multiple of 32), two 64-bit NH values with the key at memory[key ..]
;; (size + 16 bytes), stored little-endian at out, out + 8 (16 bytes per
;; sub-block). With M the sub-block and K the key read as little-endian
;; 32-bit words, and every 8 words of M one chunk:
;;
;;   NH(K, M) = sum over chunks c, t = 0..3 of
;;              (M[8c+t] + K[8c+t] mod 2^32) * (M[8c+t+4] + K[8c+t+4] mod 2^32)   mod 2^64
;;
;; (the NH of UMAC, Black et al., 1999). Lane 0 is NH(K, M); lane 1 is
;; NH(K shifted by 4 words, M), the Toeplitz construction: for two different
;; sub-blocks of the same size, the chance over random keys that both lanes
;; agree is at most 2^-64.
;;
;; Per chunk, a = M[0..3] + K[0..3] and b = M[4..7] + K[4..7] as i32x4;
;; i64x2.extmul_low/high_i32x4_u give the four 64-bit products a[t] * b[t],
;; added into an i64x2 accumulator whose two lanes are summed at the end.
;; Lane 1 uses K[4..7] and K[8..11], so the key vector loaded at offset 32
;; for one chunk is the first one of the next.
(module
  (memory (export "memory") 1)

  (func (export "nh") (param $msg i32) (param $key i32) (param $size i32) (param $count i32) (param $out i32)
    (local $p i32)      ;; read position in the sub-block
    (local $end i32)    ;; end of the sub-block
    (local $k i32)      ;; key position for this chunk
    (local $acc0 v128)  ;; lane 0 products, i64x2
    (local $acc1 v128)  ;; lane 1 products, i64x2
    (local $m0 v128) (local $m1 v128)
    (local $k0 v128) (local $k1 v128) (local $k2 v128)
    (local $a v128) (local $b v128)
    (block $done
      (loop $subs
        (br_if $done (i32.eqz (local.get $count)))
        (local.set $acc0 (v128.const i64x2 0 0))
        (local.set $acc1 (v128.const i64x2 0 0))
        (local.set $p (local.get $msg))
        (local.set $end (i32.add (local.get $msg) (local.get $size)))
        (local.set $k (local.get $key))
        (local.set $k0 (v128.load (local.get $k)))
        (loop $chunks
          (local.set $m0 (v128.load (local.get $p)))
          (local.set $m1 (v128.load offset=16 (local.get $p)))
          (local.set $k1 (v128.load offset=16 (local.get $k)))
          (local.set $k2 (v128.load offset=32 (local.get $k)))
          ;; lane 0: key words 0..7 of the chunk
          (local.set $a (i32x4.add (local.get $m0) (local.get $k0)))
          (local.set $b (i32x4.add (local.get $m1) (local.get $k1)))
          (local.set $acc0
            (i64x2.add (local.get $acc0)
              (i64x2.add (i64x2.extmul_low_i32x4_u (local.get $a) (local.get $b))
                         (i64x2.extmul_high_i32x4_u (local.get $a) (local.get $b)))))
          ;; lane 1: key words 4..11
          (local.set $a (i32x4.add (local.get $m0) (local.get $k1)))
          (local.set $b (i32x4.add (local.get $m1) (local.get $k2)))
          (local.set $acc1
            (i64x2.add (local.get $acc1)
              (i64x2.add (i64x2.extmul_low_i32x4_u (local.get $a) (local.get $b))
                         (i64x2.extmul_high_i32x4_u (local.get $a) (local.get $b)))))
          (local.set $k0 (local.get $k2))
          (local.set $k (i32.add (local.get $k) (i32.const 32)))
          (local.set $p (i32.add (local.get $p) (i32.const 32)))
          (br_if $chunks (i32.lt_u (local.get $p) (local.get $end))))
        (i64.store (local.get $out)
          (i64.add (i64x2.extract_lane 0 (local.get $acc0)) (i64x2.extract_lane 1 (local.get $acc0))))
        (i64.store offset=8 (local.get $out)
          (i64.add (i64x2.extract_lane 0 (local.get $acc1)) (i64x2.extract_lane 1 (local.get $acc1))))
        (local.set $out (i32.add (local.get $out) (i32.const 16)))
        (local.set $msg (local.get $end))
        (local.set $count (i32.sub (local.get $count) (i32.const 1)))
        (br $subs)))))
