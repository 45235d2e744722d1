/** Offline file formats (pure encoders and incremental decoders). */
export * from './sigfile.js';
export * from './deltafile.js';
export * from './framed-file.js';
export * from './preamble.js';
