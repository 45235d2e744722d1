/** The pure engine: no filesystem, network or process access. */
export * from './errors.js';
export * from './limits.js';
export * from './rolling.js';
export * from './strong.js';
export * from './signature.js';
export * from './ops.js';
export * from './matcher.js';
export * from './patch.js';
export * from './whole.js';
export * from './extents.js';
export * from './imagehash.js';
export * from './coalescer.js';
