/**
 * The matcher's three rolling loops on the same scan: native (src/native/roll.c,
 * where built and the CPU has AVX-512 with VNNI), WebAssembly and JS. A
 * signature of a random basis, then the DeltaMatcher over a target that is
 * all new data (`different`: every window rolled) and over the basis with
 * scattered 3 KiB rewrites (`scattered`: rolls only around them). In turn,
 * loop after loop; prints the median nanoseconds a byte of each, and checks
 * the three gave the same ops.
 *
 *   npm run build && node dist/bench/roll-loops.js [--size 256M] [--runs 5]
 */
import { parseArgs } from 'node:util';
import { DeltaMatcher } from '../src/core/matcher.js';
import type { DeltaOp } from '../src/core/ops.js';
import { signatureOf } from '../src/core/whole.js';
import { nativeHelper } from '../src/core/native.js';
import { randomBytes } from '../src/testing/workload.js';
import { median } from './measure.js';

const { values } = parseArgs({ options: { size: { type: 'string', default: '256M' }, runs: { type: 'string', default: '5' } } });
const size = Number(/^(\d+)M$/i.exec(values.size)?.[1] ?? NaN) * 1024 * 1024;
if (!Number.isSafeInteger(size) || size <= 0) throw new Error('--size takes a number of MiB, e.g. 256M');
const runs = Number(values.runs);
const bs = 32768;

const basis = randomBytes(1, size);
const scattered = Buffer.from(basis);
const edits = randomBytes(2, 400 * 8);
for (let k = 0; k < 400; k++) {
  const at = edits.readUInt32LE(k * 8) % (size - 3072);
  scattered.set(randomBytes(3 + k, 3072), at);
}
const targets = { different: randomBytes(9, size), scattered };
const sig = signatureOf(basis, { blockSize: bs });
const loops = { native: {}, WebAssembly: { noNative: true }, JS: { noWasm: true } } as const;
const lanes = nativeHelper()?.rollLanes?.() ?? 0;
console.log(`${values.size} target, ${bs / 1024} KiB blocks, ${runs} run(s); native loop ${lanes === 16 ? 'in use (16 lanes)' : 'not in use here: WebAssembly stands in'}`);

for (const [name, target] of Object.entries(targets)) {
  const times: Record<string, number[]> = { native: [], WebAssembly: [], JS: [] };
  let first: string | null = null;
  for (let r = 0; r < runs; r++) {
    for (const [loop, opts] of Object.entries(loops)) {
      const m = new DeltaMatcher(sig, { ...opts, reuseLiterals: true });
      // The ops' shape (literal data is reused memory, so only its length is kept).
      const ops: (string | number)[] = [];
      const keep = (out: DeltaOp[]) => {
        for (const o of out) ops.push(o.kind === 'copy' ? `c${o.offset}+${o.length}` : o.data.length);
      };
      const t0 = process.hrtime.bigint();
      for (let at = 0; at < size; at += 1 << 20) keep(m.push(target.subarray(at, at + (1 << 20))));
      keep(m.end());
      times[loop]!.push(Number(process.hrtime.bigint() - t0) / size);
      const shape = ops.join(',');
      if (first === null) first = shape;
      else if (shape !== first) throw new Error(`the ${loop} loop gave other ops on ${name}`);
    }
  }
  console.log(`${name}: ${Object.entries(times).map(([k, v]) => `${k} ${median(v).toFixed(2)} ns/B`).join(', ')}`);
}
