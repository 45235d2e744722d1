;; The matcher's inner loop: slide an Adler-32 window over data while a bit
;; filter says no block can have its weak sum.
;;
;; Built into src/core/roll-wasm-bytes.ts by scripts/build-wasm.mjs; loaded by
;; src/core/roll-wasm.ts. Memory layout (set up from JS):
;;   [0, 1024)            out table: (blockSize * x) mod 65521 for x = 0..255, i32 each
;;   [filter, ...)        the signature's filter bits, i32 words
;;   [data, ...)          a copy of the matcher's buffer
;;
;;   roll(data, p, stop, bs, a, b, filter, fshift, step) -> p'
;;
;; With `step` = 1 the window first slides one byte (unless p >= stop). Then,
;; while the filter bit of the window at p is clear and p < stop, it slides.
;; Returns the window start where it stopped; the sums are left in globals
;; (getA, getB). Weak sum = b << 16 | a, filter index = (weak * 0x9e3779b1) >>> fshift,
;; the same mixing as src/core/signature.ts.
;;
;; Eight windows at a time (SIMD): a byte at a time the loop carries a and b
;; through a chain of modular reductions, and the CPU waits on that chain.
;; Here the eight windows' sums come from prefix sums of the eight slides (in
;; 16-bit lanes for a's, then as two vectors of four), a is carried unreduced
;; and b's carry is one add and one conditional subtract, so the reductions of
;; one group overlap the next. Eight rather than four: the loads, the prefix
;; sums and the carries are paid once for twice the windows (15 % less time a
;; byte here). When any of the eight windows' filter bits is set, the scalar
;; loop takes over at the group's start and stops at the exact window. The
;; scalar loop also does the last slides before `stop` and blocks above
;; 256 KiB. Modular reduction is branch-free: random data would make branches
;; mispredict.

;; Reductions mod M = 65521 use 65536 = 15 (mod M): x = h * 65536 + l is
;; congruent to h * 15 + l, which for x < 286M is below 2M, and one unsigned
;; min(x, x - M) then gives x mod M (x - M wraps above x when x < M).

(module
  (memory (export "memory") 1)
  (global $ga (mut i32) (i32.const 0))
  (global $gb (mut i32) (i32.const 0))
  (func (export "getA") (result i32) (global.get $ga))
  (func (export "getB") (result i32) (global.get $gb))

  (func (export "roll")
    (param $data i32) (param $p i32) (param $stop i32) (param $bs i32)
    (param $a i32) (param $b i32) (param $filter i32) (param $fshift i32) (param $step i32)
    (result i32)
    (local $o i32) (local $q i32) (local $end i32) (local $f i32)
    (local $va v128) (local $vb v128) (local $d v128) (local $e v128)
    (local $ar v128) (local $br v128) (local $fv v128) (local $ad v128) (local $w v128) (local $bsm v128)
    (local $zero v128) (local $m v128) (local $ca i32)
    (local $o8 v128) (local $dl v128) (local $dh v128) (local $ah v128) (local $eh v128) (local $bh v128) (local $fh v128) (local $adh v128) (local $wh v128) (local $fsplat v128)
    ;; Without a step, test the window where it stands first.
    (if (i32.eqz (local.get $step))
      (then
        (local.set $f (i32.shr_u (i32.mul (i32.or (i32.shl (local.get $b) (i32.const 16)) (local.get $a)) (i32.const 0x9e3779b1)) (local.get $fshift)))
        (if (i32.and (i32.shr_u (i32.load (i32.add (local.get $filter) (i32.shl (i32.shr_u (local.get $f) (i32.const 5)) (i32.const 2)))) (local.get $f)) (i32.const 1))
          (then (global.set $ga (local.get $a)) (global.set $gb (local.get $b)) (return (local.get $p))))))
    (local.set $q (i32.add (local.get $data) (local.get $p)))
    (local.set $end (i32.add (local.get $data) (local.get $stop)))
    ;; Eight windows at a time while eight slides fit (blocks up to 256 KiB: a plus its offset stays under 2^27).
    (if (i32.and (i32.le_u (local.get $bs) (i32.const 262144)) (i32.le_u (i32.add (local.get $q) (i32.const 8)) (local.get $end)))
      (then
        (local.set $fsplat (i32x4.splat (local.get $filter)))
        (local.set $m (i32x4.splat (i32.const 65521)))
        (local.set $bsm (i32x4.splat (i32.rem_u (local.get $bs) (i32.const 65521))))
        ;; a is carried unreduced (a window sum moves at most 255 * bs from where it started), offset by a multiple of M to stay >= 0
        (local.set $ca (i32.mul (i32.const 65521) (i32.add (i32.div_u (i32.mul (local.get $bs) (i32.const 255)) (i32.const 65521)) (i32.const 1))))
        (local.set $va (i32x4.splat (i32.add (local.get $a) (local.get $ca))))
        (local.set $vb (i32x4.splat (local.get $b)))
        (block $hit
          (loop $group
            ;; eight slides: out bytes and in bytes as i16, their differences prefix-summed in i16 (|sum| <= 2040)
            (local.set $o8 (i16x8.extend_low_i8x16_u (v128.load64_zero (local.get $q))))
            (local.set $d (i16x8.sub (i16x8.extend_low_i8x16_u (v128.load64_zero (i32.add (local.get $q) (local.get $bs)))) (local.get $o8)))
            (local.set $d (i16x8.add (local.get $d) (i8x16.shuffle 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 (local.get $zero) (local.get $d))))
            (local.set $d (i16x8.add (local.get $d) (i8x16.shuffle 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 (local.get $zero) (local.get $d))))
            (local.set $d (i16x8.add (local.get $d) (i8x16.shuffle 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 (local.get $zero) (local.get $d))))
            (local.set $dl (i32x4.extend_low_i16x8_s (local.get $d)))
            (local.set $dh (i32x4.extend_high_i16x8_s (local.get $d)))
            (local.set $ar (i32x4.add (local.get $va) (local.get $dl)))
            (local.set $ah (i32x4.add (local.get $va) (local.get $dh)))
            (local.set $va (i32x4.add (local.get $va) (i8x16.shuffle 12 13 14 15 12 13 14 15 12 13 14 15 12 13 14 15 (local.get $dh) (local.get $dh))))
            (local.set $ar (i32x4.add
              (i32x4.sub (i32x4.shl (i32x4.shr_u (local.get $ar) (i32.const 16)) (i32.const 4)) (i32x4.shr_u (local.get $ar) (i32.const 16)))
              (v128.and (local.get $ar) (v128.const i32x4 0xffff 0xffff 0xffff 0xffff))))
            (local.set $ar (i32x4.min_u (local.get $ar) (i32x4.sub (local.get $ar) (local.get $m))))
            (local.set $ah (i32x4.add
              (i32x4.sub (i32x4.shl (i32x4.shr_u (local.get $ah) (i32.const 16)) (i32.const 4)) (i32x4.shr_u (local.get $ah) (i32.const 16)))
              (v128.and (local.get $ah) (v128.const i32x4 0xffff 0xffff 0xffff 0xffff))))
            (local.set $ah (i32x4.min_u (local.get $ah) (i32x4.sub (local.get $ah) (local.get $m))))
            ;; b's change over each prefix of the eight slides, sum of (a - 1 - bs * out): at least -8 * (255 * 65520 + 1),
            ;; so 2100 * M (less the 1 a slide) keeps it positive and under 286M; reduced, then added to the carried b
            (local.set $e (i32x4.sub (local.get $ar) (i32x4.mul (i32x4.extend_low_i16x8_u (local.get $o8)) (local.get $bsm))))
            (local.set $eh (i32x4.sub (local.get $ah) (i32x4.mul (i32x4.extend_high_i16x8_u (local.get $o8)) (local.get $bsm))))
            (local.set $e (i32x4.add (local.get $e) (i8x16.shuffle 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 (local.get $zero) (local.get $e))))
            (local.set $eh (i32x4.add (local.get $eh) (i8x16.shuffle 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 (local.get $zero) (local.get $eh))))
            (local.set $e (i32x4.add (local.get $e) (i8x16.shuffle 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 (local.get $zero) (local.get $e))))
            (local.set $eh (i32x4.add (local.get $eh) (i8x16.shuffle 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 (local.get $zero) (local.get $eh))))
            (local.set $eh (i32x4.add (local.get $eh) (i8x16.shuffle 12 13 14 15 12 13 14 15 12 13 14 15 12 13 14 15 (local.get $e) (local.get $e))))
            (local.set $e (i32x4.add (local.get $e) (v128.const i32x4 137594099 137594098 137594097 137594096)))
            (local.set $eh (i32x4.add (local.get $eh) (v128.const i32x4 137594095 137594094 137594093 137594092)))
            (local.set $e (i32x4.add
              (i32x4.sub (i32x4.shl (i32x4.shr_u (local.get $e) (i32.const 16)) (i32.const 4)) (i32x4.shr_u (local.get $e) (i32.const 16)))
              (v128.and (local.get $e) (v128.const i32x4 0xffff 0xffff 0xffff 0xffff))))
            (local.set $e (i32x4.min_u (local.get $e) (i32x4.sub (local.get $e) (local.get $m))))
            (local.set $eh (i32x4.add
              (i32x4.sub (i32x4.shl (i32x4.shr_u (local.get $eh) (i32.const 16)) (i32.const 4)) (i32x4.shr_u (local.get $eh) (i32.const 16)))
              (v128.and (local.get $eh) (v128.const i32x4 0xffff 0xffff 0xffff 0xffff))))
            (local.set $eh (i32x4.min_u (local.get $eh) (i32x4.sub (local.get $eh) (local.get $m))))
            (local.set $br (i32x4.add (local.get $vb) (local.get $e)))
            (local.set $br (i32x4.min_u (local.get $br) (i32x4.sub (local.get $br) (local.get $m))))
            (local.set $bh (i32x4.add (local.get $vb) (local.get $eh)))
            (local.set $bh (i32x4.min_u (local.get $bh) (i32x4.sub (local.get $bh) (local.get $m))))
            ;; the filter bit of each window: a byte gathered per lane, tested against 1 << (f & 7)
            (local.set $fv (i32x4.shr_u
              (i32x4.mul (v128.or (i32x4.shl (local.get $br) (i32.const 16)) (local.get $ar)) (v128.const i32x4 0x9e3779b1 0x9e3779b1 0x9e3779b1 0x9e3779b1))
              (local.get $fshift)))
            (local.set $fh (i32x4.shr_u
              (i32x4.mul (v128.or (i32x4.shl (local.get $bh) (i32.const 16)) (local.get $ah)) (v128.const i32x4 0x9e3779b1 0x9e3779b1 0x9e3779b1 0x9e3779b1))
              (local.get $fshift)))
            (local.set $ad (i32x4.add (i32x4.shr_u (local.get $fv) (i32.const 3)) (local.get $fsplat)))
            (local.set $adh (i32x4.add (i32x4.shr_u (local.get $fh) (i32.const 3)) (local.get $fsplat)))
            (local.set $w (v128.load8_lane 0 (i32x4.extract_lane 0 (local.get $ad)) (local.get $zero)))
            (local.set $w (v128.load8_lane 4 (i32x4.extract_lane 1 (local.get $ad)) (local.get $w)))
            (local.set $w (v128.load8_lane 8 (i32x4.extract_lane 2 (local.get $ad)) (local.get $w)))
            (local.set $w (v128.load8_lane 12 (i32x4.extract_lane 3 (local.get $ad)) (local.get $w)))
            (local.set $wh (v128.load8_lane 0 (i32x4.extract_lane 0 (local.get $adh)) (local.get $zero)))
            (local.set $wh (v128.load8_lane 4 (i32x4.extract_lane 1 (local.get $adh)) (local.get $wh)))
            (local.set $wh (v128.load8_lane 8 (i32x4.extract_lane 2 (local.get $adh)) (local.get $wh)))
            (local.set $wh (v128.load8_lane 12 (i32x4.extract_lane 3 (local.get $adh)) (local.get $wh)))
            (if (v128.any_true (v128.or
              (v128.and (local.get $w) (i8x16.swizzle (v128.const i8x16 1 2 4 8 16 32 64 128 0 0 0 0 0 0 0 0) (v128.and (local.get $fv) (v128.const i32x4 7 7 7 7))))
              (v128.and (local.get $wh) (i8x16.swizzle (v128.const i8x16 1 2 4 8 16 32 64 128 0 0 0 0 0 0 0 0) (v128.and (local.get $fh) (v128.const i32x4 7 7 7 7))))))
              (then
                ;; back to this group's start: the scalar loop finds which window it was
                (local.set $va (i32x4.sub (local.get $va) (i8x16.shuffle 12 13 14 15 12 13 14 15 12 13 14 15 12 13 14 15 (local.get $dh) (local.get $dh))))
                (br $hit)))
            (local.set $vb (i8x16.shuffle 12 13 14 15 12 13 14 15 12 13 14 15 12 13 14 15 (local.get $bh) (local.get $bh)))
            (local.set $q (i32.add (local.get $q) (i32.const 8)))
            (br_if $group (i32.le_u (i32.add (local.get $q) (i32.const 8)) (local.get $end)))))
        (local.set $a (i32.rem_u (i32x4.extract_lane 0 (local.get $va)) (i32.const 65521)))
        (local.set $b (i32x4.extract_lane 0 (local.get $vb)))))
    (if (i32.lt_u (local.get $q) (local.get $end))
      (then
        (loop $next
          (local.set $o (i32.load8_u (local.get $q)))
          (local.set $a (i32.sub (i32.add (local.get $a) (i32.load8_u (i32.add (local.get $q) (local.get $bs)))) (local.get $o)))
          (local.set $a (i32.add (local.get $a) (i32.and (i32.shr_s (local.get $a) (i32.const 31)) (i32.const 65521))))
          (local.set $a (i32.sub (local.get $a) (i32.const 65521)))
          (local.set $a (i32.add (local.get $a) (i32.and (i32.shr_s (local.get $a) (i32.const 31)) (i32.const 65521))))
          (local.set $b (i32.sub (i32.add (local.get $b) (i32.sub (local.get $a) (i32.const 1))) (i32.load (i32.shl (local.get $o) (i32.const 2)))))
          (local.set $b (i32.add (local.get $b) (i32.and (i32.shr_s (local.get $b) (i32.const 31)) (i32.const 65521))))
          (local.set $b (i32.sub (local.get $b) (i32.const 65521)))
          (local.set $b (i32.add (local.get $b) (i32.and (i32.shr_s (local.get $b) (i32.const 31)) (i32.const 65521))))
          (local.set $q (i32.add (local.get $q) (i32.const 1)))
          (local.set $f (i32.shr_u (i32.mul (i32.or (i32.shl (local.get $b) (i32.const 16)) (local.get $a)) (i32.const 0x9e3779b1)) (local.get $fshift)))
          (br_if $next
            (i32.and
              (i32.eqz (i32.and (i32.shr_u (i32.load (i32.add (local.get $filter) (i32.shl (i32.shr_u (local.get $f) (i32.const 5)) (i32.const 2)))) (local.get $f)) (i32.const 1)))
              (i32.lt_u (local.get $q) (local.get $end)))))))
    (global.set $ga (local.get $a))
    (global.set $gb (local.get $b))
    (i32.sub (local.get $q) (local.get $data)))
)
