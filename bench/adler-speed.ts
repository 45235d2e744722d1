/**
 * Adler-32 block-sum speed: the `adler-32` package (adler32Reference), the
 * unrolled JS (adler32Js), the SIMD WebAssembly (adler32Wasm) and the native
 * sum (src/native/roll.c, AVX-512 or AVX2, which adler32 uses), each summing
 * 64 MiB of random bytes block by block, the way signature generation does.
 *
 *   npm run build && node dist/bench/adler-speed.js [--mib 64] [--reps 3] [--blocks 4096,32768,131072]
 *
 * Prints MB/s (10^6 bytes per second) by wall time and by user CPU time
 * (process.cpuUsage), each the best of the repetitions after one warm-up
 * pass; a repetition sums the data as many times as takes 0.4 s or more. On a busy machine the CPU figure is the steadier one: wall time also
 * counts the time the process waited for a core. Exits non-zero if they
 * disagree on any block.
 */
import { randomFillSync } from 'node:crypto';
import { parseArgs } from 'node:util';
import { adler32Wasm, wasmAvailable } from '../src/core/adler-wasm.js';
import { nativeHelper } from '../src/core/native.js';
import { adler32Js } from '../src/core/rolling.js';
import { adler32Reference } from './adler-reference.js';

type Sum = (buf: Uint8Array, start: number, end: number) => number;

interface Result {
  wallMBs: number;
  cpuMBs: number;
  /** Every block's sum folded together, to compare implementations. */
  check: number;
}

/**
 * Sum `data` in blocks of `block` bytes `rounds` times; timing by wall clock
 * and user CPU. Several rounds keep a timed pass long against the clock tick
 * that user CPU time may be counted in.
 */
function pass(sum: Sum, data: Uint8Array, block: number, rounds: number): Result {
  const cpu0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  let check = 0;
  for (let r = 0; r < rounds; r++) {
    check = 0;
    for (let p = 0; p < data.length; p += block) {
      check = (Math.imul(check, 31) + sum(data, p, Math.min(data.length, p + block))) >>> 0;
    }
  }
  const wallS = Number(process.hrtime.bigint() - t0) / 1e9;
  const cpuS = process.cpuUsage(cpu0).user / 1e6;
  const bytes = data.length * rounds;
  return { wallMBs: bytes / 1e6 / wallS, cpuMBs: bytes / 1e6 / Math.max(cpuS, 1e-6), check };
}

/** Timed passes of at least MIN_PASS_S seconds each. */
const MIN_PASS_S = 0.4;

function best(sum: Sum, data: Uint8Array, block: number, reps: number): Result {
  const warm = pass(sum, data, block, 1); // warm-up; sets the checksum and the rounds per pass
  const rounds = Math.max(1, Math.ceil((MIN_PASS_S * warm.wallMBs * 1e6) / data.length));
  let out: Result = { wallMBs: 0, cpuMBs: 0, check: warm.check };
  for (let r = 0; r < reps; r++) {
    const got = pass(sum, data, block, rounds);
    if (got.check !== warm.check) throw new Error('checksums changed between repetitions');
    out = { wallMBs: Math.max(out.wallMBs, got.wallMBs), cpuMBs: Math.max(out.cpuMBs, got.cpuMBs), check: warm.check };
  }
  return out;
}

function main(): number {
  const { values } = parseArgs({
    options: {
      mib: { type: 'string', default: '64' },
      reps: { type: 'string', default: '3' },
      blocks: { type: 'string', default: '4096,32768,131072' },
    },
  });
  const mib = Number(values.mib);
  const reps = Number(values.reps);
  const blocks = values.blocks.split(',').map(Number);
  if (!(mib > 0) || !Number.isInteger(reps) || reps < 1 || blocks.some((b) => !Number.isInteger(b) || b < 1)) {
    console.error('usage: node dist/bench/adler-speed.js [--mib N] [--reps N] [--blocks B1,B2,...]');
    return 2;
  }
  const data = randomFillSync(new Uint8Array(Math.round(mib * 1024 * 1024)));
  const impls: [string, Sum][] = [
    ['adler-32 package', adler32Reference],
    ['adler32Js', adler32Js],
  ];
  if (wasmAvailable()) impls.push(['adler32Wasm (SIMD)', adler32Wasm]);
  else console.log('WebAssembly SIMD is not available here: adler32Wasm skipped');
  const native = nativeHelper();
  if (native?.adler32) impls.push([`native (${native.adlerStep?.() ?? '?'} B a step)`, native.adler32]);
  else console.log('the native helper is not built: its adler32 skipped');

  console.log(`Adler-32 over ${mib} MiB of random bytes; MB/s = 10^6 bytes/s, best of ${reps} after a warm-up`);
  console.log(`${'block'.padEnd(8)} ${'implementation'.padEnd(20)} ${'wall MB/s'.padStart(10)} ${'CPU MB/s'.padStart(10)}`);
  let failed = false;
  for (const block of blocks) {
    let want: number | undefined;
    for (const [name, sum] of impls) {
      const r = best(sum, data, block, reps);
      want ??= r.check;
      const agree = r.check === want;
      if (!agree) failed = true;
      const label = block % 1024 === 0 ? `${block / 1024} KiB` : `${block} B`;
      console.log(
        `${label.padEnd(8)} ${name.padEnd(20)} ${r.wallMBs.toFixed(0).padStart(10)} ${r.cpuMBs.toFixed(0).padStart(10)}${agree ? '' : '  MISMATCH'}`,
      );
    }
  }
  return failed ? 1 : 0;
}

process.exitCode = main();
