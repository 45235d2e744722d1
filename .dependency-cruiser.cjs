/**
 * The layering of docs/architecture.md, checked on every `npm test`
 * (`npm run layers`). Bottom to top:
 *   src/core, src/bytes -> protocol/, src/rdiff, src/format -> src/io -> src/net
 *   -> src/api -> src/cli; src/testing (generators) beside the CLI.
 * Nothing imports upward, and nothing that ships imports bench/, fuzz/ or test/.
 * Each rule names the layer and what it may not reach; the comment says why.
 */
/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: 'core-is-the-bottom',
      comment: 'src/core is the pure engine: it imports only itself (and npm packages), never a layer above it.',
      severity: 'error',
      from: { path: '^src/core/' },
      to: { path: '^(src/(?!core/)|protocol/|bench/|fuzz/|test/)' },
    },
    {
      name: 'core-does-no-io',
      comment: 'src/core does no I/O: no files, sockets, processes or timers of its own.',
      severity: 'error',
      from: { path: '^src/core/' },
      to: { dependencyTypes: ['core'], path: '^(node:)?(fs|fs/promises|net|tls|child_process|dgram|http|https|readline|worker_threads)$' },
    },
    {
      name: 'bytes-on-core-only',
      comment: 'src/bytes (framing, bitmaps) sits beside core and uses nothing but core.',
      severity: 'error',
      from: { path: '^src/bytes/' },
      to: { path: '^(src/(?!core/|bytes/)|protocol/)' },
    },
    {
      name: 'protocol-on-core-and-bytes',
      comment: 'The wire protocol owns its messages and imports only src/core and src/bytes.',
      severity: 'error',
      from: { path: '^protocol/' },
      to: { path: '^src/(?!core/|bytes/)' },
    },
    {
      name: 'rdiff-on-core-only',
      comment: "The rdiff engine sits beside core and uses nothing above it.",
      severity: 'error',
      from: { path: '^src/rdiff/' },
      to: { path: '^(src/(?!core/|rdiff/)|protocol/)' },
    },
    {
      name: 'format-below-io',
      comment: 'Offline file formats are pure: no io, net, api or cli.',
      severity: 'error',
      from: { path: '^src/format/' },
      to: { path: '^src/(io|net|api|cli|testing)/' },
    },
    {
      name: 'io-below-net',
      comment: 'io adapts files for the layers above; it never reaches the network.',
      severity: 'error',
      from: { path: '^src/io/' },
      to: { path: '^src/net/' },
    },
    {
      name: 'io-and-net-below-api',
      comment: 'io and net never import the API or the CLI (the API is drawn above the network).',
      severity: 'error',
      from: { path: '^src/(io|net)/' },
      to: { path: '^src/(api/|cli/|index\\.ts$)' },
    },
    {
      name: 'api-below-cli',
      comment: 'The programmatic API never reaches into the CLI.',
      severity: 'error',
      from: { path: '^src/api/' },
      to: { path: '^src/cli/' },
    },
    {
      name: 'cli-through-api',
      comment: 'The CLI calls the API (src/api), not the network layer directly.',
      severity: 'error',
      from: { path: '^src/cli/' },
      to: { path: '^src/net/' },
    },
    {
      name: 'shipped-code-stands-alone',
      comment: 'Nothing under src/ or protocol/ imports bench/, fuzz/ or test/: the package ships without them.',
      severity: 'error',
      from: { path: '^(src|protocol)/' },
      to: { path: '^(bench|fuzz|test)/' },
    },
    {
      name: 'no-circular',
      comment: 'No import cycles.',
      severity: 'error',
      from: { path: '^(src|protocol)/' },
      to: { circular: true },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '^(dist|node_modules)/' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: { extensions: ['.ts', '.js'] },
  },
};
