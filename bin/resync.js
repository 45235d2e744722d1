#!/usr/bin/env node
// The bundled CLI (npm run build makes it); the unbundled build if it is missing.
try {
  await import('../dist/resync.mjs');
} catch (e) {
  if (e?.code !== 'ERR_MODULE_NOT_FOUND' || !String(e.message).includes('resync.mjs')) throw e;
  await import('../dist/src/cli/main.js');
}
