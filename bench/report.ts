/**
 * Results of a bench run, the goals they are judged against, and the
 * Markdown written to docs/benchmarks.md (and printed on the console).
 * Pure: no I/O.
 */
import type { Machine } from './machine.js';
import { median } from './measure.js';
import type { ScenarioStats } from './workload.js';

/** One measured process: wall time and peak RSS. */
export interface Sample {
  wallMs: number;
  rssBytes: number;
}

/** One tool's signature/delta/patch runs on a scenario. */
export interface FileModeRuns {
  signature: Sample[];
  delta: Sample[];
  patch: Sample[];
  signatureBytes: number;
  deltaBytes: number;
}

/** One transfer over TCP. */
export interface TcpSample {
  /** Client process, spawn to exit. */
  wallMs: number;
  /** Payload bytes both ways, as the client reports them. */
  wireBytes: number;
  senderRssBytes: number;
  receiverRssBytes: number;
}

/** Everything measured for one scenario. */
export interface ScenarioResult {
  scenario: string;
  stats: ScenarioStats;
  /** resync's default for the image size; rdiff uses the same. */
  blockSize: number;
  /** What rsync was given (the same unless above rsync's maximum). */
  rsyncBlockSize: number;
  resync: FileModeRuns;
  rdiff: FileModeRuns;
  push: TcpSample[];
  rsync: TcpSample[];
  /** Anything odd seen while measuring (a peer producing a wrong file, a clamped block size). */
  notes: string[];
}

/** resync on a large sparse image, one run of each step. */
export interface MemoryResult {
  imageSize: number;
  /** Bytes written into the basis and the target (the rest are holes). */
  basisDataBytes: number;
  targetDataBytes: number;
  blockSize: number;
  signature: Sample;
  delta: Sample;
  deltaBytes: number;
  push: TcpSample;
}

/** A complete run. */
export interface BenchReport {
  machine: Machine;
  /** The command that reproduces the run. */
  command: string;
  size: number;
  runs: number;
  seed: number;
  rssMethod: string;
  scenarios: ScenarioResult[];
  /** The sparse image size asked for (0: skipped). */
  memorySize: number;
  memory: MemoryResult | undefined;
  /** Median wall time of `resync --version` and `rdiff --version`: the fixed cost in every resync figure. */
  startup: { resyncMs: number; rdiffMs: number };
}

/** Whether a goal was met by a run's figures. */
export type Status = 'met' | 'not met' | 'not measured';

/** One goal and how the run did against it. */
export interface Verdict {
  goal: string;
  status: Status;
  evidence: string;
}

/** The memory goal, in bytes (MB = 10^6 bytes). */
export const RSS_GOAL_BYTES = 300e6;
/** The memory goal's image size. */
export const RSS_GOAL_IMAGE = 16 * 1024 ** 3;

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

/** "1.23 s" (or "850 ms" under a second). */
export function fmtMs(ms: number): string {
  return ms < 1000 ? `${ms.toFixed(0)} ms` : `${(ms / 1000).toFixed(2)} s`;
}

/** "9.0 MiB", "512 B". */
export function fmtBytes(n: number): string {
  if (n < KiB) return `${n} B`;
  if (n < MiB) return `${(n / KiB).toFixed(1)} KiB`;
  if (n < GiB) return `${(n / MiB).toFixed(1)} MiB`;
  return `${(n / GiB).toFixed(2)} GiB`;
}

/** Sizes as given on the command line: "256M", "1G". */
export function fmtSizeArg(n: number): string {
  if (n === 0) return '0';
  if (n % GiB === 0) return `${n / GiB}G`;
  if (n % MiB === 0) return `${n / MiB}M`;
  if (n % KiB === 0) return `${n / KiB}K`;
  return String(n);
}

/** Peak RSS in MB (10^6 bytes). */
export function fmtRss(bytes: number): string {
  return bytes === 0 ? 'n/a' : `${(bytes / 1e6).toFixed(bytes < 10e6 ? 1 : 0)} MB`;
}

/** resync/peer with a reading aid: "0.45 (2.2x faster)". */
export function fmtRatio(ours: number, theirs: number, lowerIs = 'faster', higherIs = 'slower'): string {
  if (!(theirs > 0)) return 'n/a';
  const r = ours / theirs;
  if (Math.abs(r - 1) < 0.05) return r.toFixed(2);
  const aid = r < 1 ? `${(1 / r).toFixed(1)}x ${lowerIs}` : `${r.toFixed(1)}x ${higherIs}`;
  return `${r.toFixed(2)} (${aid})`;
}

function med(xs: readonly Sample[], key: keyof Sample): number {
  return median(xs.map((x) => x[key]));
}

function medTcp(xs: readonly TcpSample[], key: keyof TcpSample): number {
  return median(xs.map((x) => x[key]));
}

/** Median wall time with the spread of the runs: "1.49 s ±3%". */
function fmtWall(walls: readonly number[]): string {
  const m = median(walls);
  if (walls.length < 2 || !(m > 0)) return fmtMs(m);
  const spread = ((Math.max(...walls) - Math.min(...walls)) / 2 / m) * 100;
  return `${fmtMs(m)} ±${spread.toFixed(0)}%`;
}

function sizeRatio(ours: number, theirs: number): string {
  return fmtRatio(ours, theirs, 'smaller', 'larger');
}

/** Judge the run against the goals in docs/benchmarks.md. */
export function verdicts(r: BenchReport): Verdict[] {
  const by = (name: string): ScenarioResult | undefined => r.scenarios.find((s) => s.scenario === name);
  const out: Verdict[] = [];

  const deltaGoal = (name: string, maxRatio: number, goal: string): void => {
    const s = by(name);
    if (!s) {
      out.push({ goal, status: 'not measured', evidence: `scenario ${name} was not run` });
      return;
    }
    const a = med(s.resync.delta, 'wallMs');
    const b = med(s.rdiff.delta, 'wallMs');
    out.push({
      goal,
      status: a / b <= maxRatio ? 'met' : 'not met',
      evidence: `resync delta ${fmtMs(a)}, rdiff delta ${fmtMs(b)}: resync/rdiff ${fmtRatio(a, b)}; needs <= ${maxRatio.toFixed(2)}`,
    });
  };
  deltaGoal('scattered', 0.5, 'File mode: `resync delta` at least 2x faster than `rdiff delta` on scattered');
  deltaGoal('identical', 0.5, 'File mode: `resync delta` at least 2x faster than `rdiff delta` on identical');
  deltaGoal('shifted', 1, 'File mode: `resync delta` no slower than `rdiff delta` on shifted');

  {
    const goal = "File mode: delta size within 5% of rdiff's or smaller, at the same block size (every scenario run)";
    if (r.scenarios.length === 0) out.push({ goal, status: 'not measured', evidence: 'no scenario was run' });
    else {
      const parts = r.scenarios.map((s) => `${s.scenario} ${(s.resync.deltaBytes / s.rdiff.deltaBytes).toFixed(3)}`);
      const ok = r.scenarios.every((s) => s.resync.deltaBytes <= 1.05 * s.rdiff.deltaBytes);
      out.push({ goal, status: ok ? 'met' : 'not met', evidence: `resync/rdiff delta size: ${parts.join(', ')}; needs <= 1.050` });
    }
  }

  for (const name of ['scattered', 'identical']) {
    const goal = `TCP: \`resync push\` at least 1.5x faster than rsync on ${name}, with fewer bytes on the wire`;
    const s = by(name);
    if (!s) {
      out.push({ goal, status: 'not measured', evidence: `scenario ${name} was not run` });
      continue;
    }
    const a = medTcp(s.push, 'wallMs');
    const b = medTcp(s.rsync, 'wallMs');
    const wa = medTcp(s.push, 'wireBytes');
    const wb = medTcp(s.rsync, 'wireBytes');
    const fast = a / b <= 1 / 1.5;
    const lean = wa < wb;
    out.push({
      goal,
      status: fast && lean ? 'met' : 'not met',
      evidence:
        `push ${fmtMs(a)}, rsync ${fmtMs(b)}: resync/rsync ${fmtRatio(a, b)}, needs <= 0.67 (${fast ? 'ok' : 'missed'}); ` +
        `wire ${fmtBytes(wa)} vs ${fmtBytes(wb)} (${lean ? 'fewer' : 'not fewer'})`,
    });
  }

  {
    const goal = 'Memory: peak RSS < 300 MB on a 16 GiB sparse image (signature, delta, push client and server)';
    const m = r.memory;
    if (!m) out.push({ goal, status: 'not measured', evidence: 'the sparse-image run was skipped' });
    else {
      const worst = Math.max(m.signature.rssBytes, m.delta.rssBytes, m.push.senderRssBytes, m.push.receiverRssBytes);
      const figures =
        `signature ${fmtRss(m.signature.rssBytes)}, delta ${fmtRss(m.delta.rssBytes)}, ` +
        `push ${fmtRss(m.push.senderRssBytes)}, serve ${fmtRss(m.push.receiverRssBytes)}`;
      if (m.imageSize !== RSS_GOAL_IMAGE) {
        out.push({ goal, status: 'not measured', evidence: `ran at ${fmtBytes(m.imageSize)}, not 16 GiB: ${figures}` });
      } else {
        out.push({ goal, status: worst < RSS_GOAL_BYTES ? 'met' : 'not met', evidence: `${figures}; largest ${fmtRss(worst)}` });
      }
    }
  }
  return out;
}

function table(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const line = (cells: readonly string[]): string => `| ${cells.join(' | ')} |`;
  return [line(header), line(header.map(() => '---')), ...rows.map(line)].join('\n');
}

function machineLine(m: Machine): string {
  const load = m.loadAvgEnd !== undefined ? `${m.loadAvg.toFixed(2)} at start, ${m.loadAvgEnd.toFixed(2)} at end (the bench's own load)` : `${m.loadAvg.toFixed(2)} at start`;
  return `${m.cpu}, ${m.cpus} logical CPUs, ${fmtBytes(m.ramBytes)} RAM, Linux ${m.kernel}, Node ${m.node}, ${m.rdiff}, ${m.rsync}; ${m.date}; 1-minute load average ${load}`;
}

function describeScenario(s: ScenarioResult): string {
  const st = s.stats;
  const block =
    s.rsyncBlockSize === s.blockSize
      ? `Block size ${s.blockSize} bytes for all three (resync's default for this size).`
      : `Block size ${s.blockSize} bytes for resync and rdiff (resync's default for this size); rsync capped at ${s.rsyncBlockSize}.`;
  return (
    `${fmtBytes(st.basisSize)} basis, ${fmtBytes(st.targetSize)} target; ${st.edits} edits changing ${fmtBytes(st.changedBytes)} ` +
    `(overwritten ${fmtBytes(st.overwrittenBytes)}, inserted ${fmtBytes(st.insertedBytes)}, deleted ${fmtBytes(st.deletedBytes)}). ${block}`
  );
}

function scenarioFileTable(s: ScenarioResult): string {
  const a = s.resync;
  const b = s.rdiff;
  const wallRow = (label: string, x: Sample[], y: Sample[]): string[] => [
    label,
    fmtWall(x.map((v) => v.wallMs)),
    fmtWall(y.map((v) => v.wallMs)),
    fmtRatio(med(x, 'wallMs'), med(y, 'wallMs')),
  ];
  const rssRow = (label: string, x: Sample[], y: Sample[]): string[] => [label, fmtRss(med(x, 'rssBytes')), fmtRss(med(y, 'rssBytes')), sizeRatio(med(x, 'rssBytes'), med(y, 'rssBytes'))];
  return table(
    ['file mode', 'resync', 'rdiff', 'resync/rdiff'],
    [
      wallRow('signature wall time', a.signature, b.signature),
      wallRow('delta wall time', a.delta, b.delta),
      wallRow('patch wall time', a.patch, b.patch),
      ['signature size', fmtBytes(a.signatureBytes), fmtBytes(b.signatureBytes), sizeRatio(a.signatureBytes, b.signatureBytes)],
      ['delta size', fmtBytes(a.deltaBytes), fmtBytes(b.deltaBytes), sizeRatio(a.deltaBytes, b.deltaBytes)],
      rssRow('peak RSS signature', a.signature, b.signature),
      rssRow('peak RSS delta', a.delta, b.delta),
      rssRow('peak RSS patch', a.patch, b.patch),
    ],
  );
}

function scenarioTcpTable(s: ScenarioResult): string {
  const a = s.push;
  const b = s.rsync;
  const row = (label: string, key: keyof TcpSample, fmt: (n: number) => string, ratio: (x: number, y: number) => string): string[] => [
    label,
    fmt(medTcp(a, key)),
    fmt(medTcp(b, key)),
    ratio(medTcp(a, key), medTcp(b, key)),
  ];
  return table(
    ['over TCP (127.0.0.1)', 'resync push -> serve', 'rsync -> rsync daemon', 'resync/rsync'],
    [
      ['end-to-end wall time', fmtWall(a.map((x) => x.wallMs)), fmtWall(b.map((x) => x.wallMs)), fmtRatio(medTcp(a, 'wallMs'), medTcp(b, 'wallMs'))],
      row('bytes on the wire', 'wireBytes', fmtBytes, sizeRatio),
      row('peak RSS sender', 'senderRssBytes', fmtRss, sizeRatio),
      row('peak RSS receiver', 'receiverRssBytes', fmtRss, sizeRatio),
    ],
  );
}

function summaryTable(r: BenchReport): string {
  return table(
    ['scenario', 'block', 'delta wall resync / rdiff', 'ratio', 'delta size resync / rdiff', 'ratio', 'TCP wall resync / rsync', 'ratio', 'wire bytes resync / rsync', 'largest peak RSS resync / peer'],
    r.scenarios.map((s) => {
      const dA = med(s.resync.delta, 'wallMs');
      const dB = med(s.rdiff.delta, 'wallMs');
      const tA = medTcp(s.push, 'wallMs');
      const tB = medTcp(s.rsync, 'wallMs');
      const rssA = Math.max(
        med(s.resync.signature, 'rssBytes'),
        med(s.resync.delta, 'rssBytes'),
        med(s.resync.patch, 'rssBytes'),
        medTcp(s.push, 'senderRssBytes'),
        medTcp(s.push, 'receiverRssBytes'),
      );
      const rssB = Math.max(
        med(s.rdiff.signature, 'rssBytes'),
        med(s.rdiff.delta, 'rssBytes'),
        med(s.rdiff.patch, 'rssBytes'),
        medTcp(s.rsync, 'senderRssBytes'),
        medTcp(s.rsync, 'receiverRssBytes'),
      );
      return [
        s.scenario,
        fmtBytes(s.blockSize),
        `${fmtMs(dA)} / ${fmtMs(dB)}`,
        fmtRatio(dA, dB),
        `${fmtBytes(s.resync.deltaBytes)} / ${fmtBytes(s.rdiff.deltaBytes)}`,
        sizeRatio(s.resync.deltaBytes, s.rdiff.deltaBytes),
        `${fmtMs(tA)} / ${fmtMs(tB)}`,
        fmtRatio(tA, tB),
        `${fmtBytes(medTcp(s.push, 'wireBytes'))} / ${fmtBytes(medTcp(s.rsync, 'wireBytes'))}`,
        `${fmtRss(rssA)} / ${fmtRss(rssB)}`,
      ];
    }),
  );
}

function memorySection(r: BenchReport): string {
  const m = r.memory;
  if (!m) return 'Skipped in this run (`--memory-size 0`).';
  return [
    `A ${fmtBytes(m.imageSize)} sparse basis (ftruncate, then ${fmtBytes(m.basisDataBytes)} of random data in a few writes) and a target ` +
      `copied from it with ${fmtBytes(m.targetDataBytes)} more written; block size ${m.blockSize} bytes (resync's default). One run of each step.`,
    '',
    table(
      ['step', 'wall time', 'peak RSS'],
      [
        ['resync signature', fmtMs(m.signature.wallMs), fmtRss(m.signature.rssBytes)],
        [`resync delta (delta ${fmtBytes(m.deltaBytes)})`, fmtMs(m.delta.wallMs), fmtRss(m.delta.rssBytes)],
        [`resync push (sender; ${fmtBytes(m.push.wireBytes)} on the wire)`, fmtMs(m.push.wallMs), fmtRss(m.push.senderRssBytes)],
        ['resync serve (receiver)', '', fmtRss(m.push.receiverRssBytes)],
      ],
    ),
  ].join('\n');
}

/** Default text of the section that is filled in by hand from profiles. */
export const WHERE_TIME_GOES_PLACEHOLDER = '_To be filled in from CPU profiles of `resync delta` and `resync push` on these workloads._';

/** The heading of the hand-written section; its body is kept when the report is rewritten. */
export const WHERE_TIME_GOES_HEADING = '## Where time goes';

/** The body of the "Where time goes" section of an existing report, if any. */
export function extractWhereTimeGoes(markdown: string): string | undefined {
  const start = markdown.indexOf(`\n${WHERE_TIME_GOES_HEADING}\n`);
  if (start < 0) return undefined;
  const bodyStart = start + WHERE_TIME_GOES_HEADING.length + 2;
  const next = markdown.indexOf('\n## ', bodyStart);
  const body = (next < 0 ? markdown.slice(bodyStart) : markdown.slice(bodyStart, next)).trim();
  return body === '' ? undefined : body;
}

/** Tables and verdicts, as printed on the console at the end of a run. */
export function renderTables(r: BenchReport): string {
  const parts: string[] = [
    '## Summary (medians)',
    '',
    summaryTable(r),
    '',
    `Process start-up, included in every wall time: \`resync --version\` ${fmtMs(r.startup.resyncMs)}, \`rdiff --version\` ${fmtMs(r.startup.rdiffMs)}.`,
    '',
  ];
  for (const s of r.scenarios) {
    parts.push(`### ${s.scenario}`, '', describeScenario(s), '', scenarioFileTable(s), '', scenarioTcpTable(s), '');
    if (s.notes.length > 0) parts.push(...s.notes.map((n) => `- ${n}`), '');
  }
  parts.push(`## Memory: ${fmtBytes(r.memorySize)} sparse image`, '', memorySection(r), '');
  return parts.join('\n');
}

function renderVerdicts(vs: readonly Verdict[]): string {
  return table(
    ['goal', 'this run', 'figures'],
    vs.map((v) => [v.goal, v.status === 'met' ? '**met**' : v.status === 'not met' ? '**not met**' : 'not measured', v.evidence]),
  );
}

/** The whole of docs/benchmarks.md. */
export function renderMarkdown(r: BenchReport, whereTimeGoes: string = WHERE_TIME_GOES_PLACEHOLDER): string {
  const m = r.machine;
  const vs = verdicts(r);
  return [
    '# Benchmarks',
    '',
    'resync against the tools it replaces, on synthetic VM disk images from `bench/workload.ts`:',
    '`resync signature`/`delta`/`patch` against `rdiff` (librsync) on files, and `resync push` to `resync serve`',
    'against the rsync client pushing to an rsync daemon, both over 127.0.0.1. This file is written by `npm run bench`;',
    'every figure below comes from the one run described here.',
    '',
    `- **Machine:** ${machineLine(m)}`,
    `- **resync:** ${m.resync}`,
    `- **Reproduce:** \`${r.command}\``,
    `- **Images:** ${fmtBytes(r.size)} per scenario, seed ${r.seed}, in a temporary directory under ${m.tmpDir} (${m.tmpFs}); medians of ${r.runs} run(s)`,
    `- **Peak RSS:** ${r.rssMethod}`,
    // Only the load at the start says anything about other work: a push and its
    // server keep both CPUs busy, so the bench itself raises the load by its end.
    ...(m.loadAvg > m.cpus / 2
      ? [
          '',
          `> Other work was running when the bench started: the 1-minute load average was ${m.loadAvg.toFixed(1)} on ${m.cpus} CPUs. ` +
            'Both sides of each comparison ran under it (they alternate), but absolute times are inflated and ratios noisier than on an idle machine.',
        ]
      : []),
    '',
    '## Goals',
    '',
    'Judged from the medians of this run:',
    '',
    renderVerdicts(vs),
    '',
    `Met: ${vs.filter((v) => v.status === 'met').length} of ${vs.length}.`,
    '',
    renderTables(r).trimEnd(),
    '',
    '## Method',
    '',
    `- For each scenario, \`makePair(dir, scenario, ${fmtSizeArg(r.size)}, ${r.seed})\` writes a basis and a target image (zero extents left as holes). ` +
      'Nothing is evicted from the page cache between runs: the images fit in RAM, so these are warm-cache figures and measure CPU, not the disk.',
    "- Block size: one unmeasured `resync signature --json` of the basis gives resync's default `blockSize` for the image size; then " +
      '`resync signature --block-size B`, `rdiff -b B signature`, and `rsync -B B` all use it. rdiff keeps its other defaults ' +
      '(BLAKE2 strong sums at full length, RabinKarp rolling sum).',
    '- File mode, per run: `resync signature`, `resync delta`, `resync patch BASIS DELTA OUT`, and `rdiff signature`, `rdiff delta`, `rdiff patch`. ' +
      'Delta and signature sizes are the sizes of the files written.',
    '- Over TCP, per run: the receiving copy is reset to the basis with `cp --sparse=always` followed by `sync` (so neither tool pays for writing the fresh copy back: an fsync by the receiver would flush all of it), a fresh server is started ' +
      '(`resync serve --listen 127.0.0.1:0 --volume NAME=PATH:rw --secret-file F`, or `rsync --daemon --no-detach --port P --config rsyncd.conf` ' +
      'with `use chroot = no` and one writable module), and the client is timed: `resync push TARGET 127.0.0.1:PORT/NAME --secret-file F --block-size B`, or ' +
      '`rsync --no-whole-file --inplace --stats --ignore-times -B B TARGET rsync://127.0.0.1:P/vol/NAME` (`--no-whole-file` so rsync uses its delta ' +
      'algorithm on loopback; `--ignore-times` so it never skips the file on a size-and-mtime match). Both receivers update the file in place.',
    "- `--inplace` costs rsync matches: it will not copy from basis blocks before the current write position (they may already be " +
      'overwritten), so after an insertion the shifted remainder of the file goes as literal data (see `shifted` and `mixed`). ' +
      "resync's receiver also patches in place; a copy from a range it has already overwritten reads the old bytes back from its undo journal.",
    '- Durability differs: `resync patch` and `resync serve` fsync what they write (the output file, or the undo journal and the image ' +
      'when patching in place) and check the SHA-256 of the result before reporting success. rdiff does neither; rsync checks a whole-file ' +
      'checksum but does not fsync (no `--fsync`), so its writes may still be in the page cache when it exits.',
    '- Bytes on the wire: resync `bytesSent + bytesReceived` from `push --json`; rsync "Total bytes sent" + "Total bytes received" from `--stats`. ' +
      'Both count payload bytes, not TCP/IP headers.',
    '- Wall time is spawn to exit of the measured process as the bench sees it, so it includes process start-up (Node for resync). ' +
      'For TCP it is the client, from start to finish of the transfer; the server is already listening.',
    `- Each figure is the median of ${r.runs} run(s); "±" is half the range of the runs relative to the median. resync and the peer alternate ` +
      'and swap order every run so that drift in machine load hits both.',
    '- The rsync daemon\'s receiving side is two processes (generator and receiver); its peak RSS is the larger of the two, not their sum.',
    '- Every resync output (the patched file and the served volume after each push) is compared with the target by SHA-256; ' +
      'the bench exits non-zero if one differs. The peers\' outputs are checked the same way and any mismatch is listed under the scenario.',
    "- resync is run from a copy of the build taken when the bench starts (`node bin/resync.js`: the bundle `dist/resync.cjs` with its code cache, and the native extent helper from `build/`), so a rebuild during the run cannot change it.",
    '',
    WHERE_TIME_GOES_HEADING,
    '',
    whereTimeGoes,
    '',
  ].join('\n');
}
