/** The state directory (digest caches, NBD export journals): apart so the CLI can name it without loading either. */
import { homedir } from 'node:os';
import { join } from 'node:path';

/** The state directory: `$XDG_STATE_HOME/resync`, else `~/.local/state/resync`. */
export function defaultStateDir(env: NodeJS.ProcessEnv = process.env): string {
  const x = env.XDG_STATE_HOME;
  return x && x.startsWith('/') ? join(x, 'resync') : join(homedir(), '.local', 'state', 'resync');
}
