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
;; the same mixing as src/core/signature.ts. Modular reduction is branch-free:
;; random data would make the branches mispredict.

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
    (local $f i32) (local $o i32) (local $at i32)
    (block $done
      (loop $next
        (if (local.get $step)
          (then
            (br_if $done (i32.ge_u (local.get $p) (local.get $stop)))
            (local.set $at (i32.add (local.get $data) (local.get $p)))
            (local.set $o (i32.load8_u (local.get $at)))
            ;; a += in - out, reduced into [0, 65521)
            (local.set $a (i32.sub (i32.add (local.get $a) (i32.load8_u (i32.add (local.get $at) (local.get $bs)))) (local.get $o)))
            (local.set $a (i32.add (local.get $a) (i32.and (i32.shr_s (local.get $a) (i32.const 31)) (i32.const 65521))))
            (local.set $a (i32.sub (local.get $a) (i32.const 65521)))
            (local.set $a (i32.add (local.get $a) (i32.and (i32.shr_s (local.get $a) (i32.const 31)) (i32.const 65521))))
            ;; b += a - 1 - (bs * out mod 65521), reduced
            (local.set $b (i32.sub (i32.add (local.get $b) (i32.sub (local.get $a) (i32.const 1)))
                                   (i32.load (i32.shl (local.get $o) (i32.const 2)))))
            (local.set $b (i32.add (local.get $b) (i32.and (i32.shr_s (local.get $b) (i32.const 31)) (i32.const 65521))))
            (local.set $b (i32.sub (local.get $b) (i32.const 65521)))
            (local.set $b (i32.add (local.get $b) (i32.and (i32.shr_s (local.get $b) (i32.const 31)) (i32.const 65521))))
            (local.set $p (i32.add (local.get $p) (i32.const 1)))))
        (local.set $step (i32.const 1))
        (local.set $f
          (i32.shr_u
            (i32.mul (i32.or (i32.shl (local.get $b) (i32.const 16)) (local.get $a)) (i32.const 0x9e3779b1))
            (local.get $fshift)))
        (br_if $done
          (i32.and
            (i32.shr_u
              (i32.load (i32.add (local.get $filter) (i32.shl (i32.shr_u (local.get $f) (i32.const 5)) (i32.const 2))))
              (i32.and (local.get $f) (i32.const 31)))
            (i32.const 1)))
        (br_if $done (i32.ge_u (local.get $p) (local.get $stop)))
        (br $next)))
    (global.set $ga (local.get $a))
    (global.set $gb (local.get $b))
    (local.get $p))
)
