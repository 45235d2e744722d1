/** librsync (rdiff) signature and delta formats: pure encoders, incremental decoders, the matcher. */
export * from './constants.js';
export * from './weak.js';
export * from './md4.js';
export * from './signature.js';
export * from './matcher.js';
export * from './delta.js';
