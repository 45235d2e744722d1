/** Wire protocol and shared message codec (pure). */
export * from './constants.js';
export * from './messages.js';
export * from './codec.js';
export * from './errors.js';
export * from './auth.js';
export * from './session.js';
export * from './convert.js';
