// Preloaded with `node --require` to play a machine where the zstd binding
// did not install: resolving zstd-napi fails as a missing module does.
const Module = require('node:module');
const resolve = Module._resolveFilename;
Module._resolveFilename = function (request, ...rest) {
  if (request === 'zstd-napi' || request.startsWith('zstd-napi/')) {
    const e = new Error(`Cannot find module '${request}'`);
    e.code = 'MODULE_NOT_FOUND';
    throw e;
  }
  return resolve.call(this, request, ...rest);
};
