/**
 * What a caller needs to describe a network session before making one:
 * server config files, secret and TLS files, HOST:PORT/VOLUME and ssh
 * remotes. Light to load (no client or server), so the CLI takes it at start.
 */
export {
  ConfigError,
  MIN_SECRET_LEN,
  checkVolumes,
  isLoopbackHost,
  loadServerConfig,
  parseRemote,
  readSecretFile,
  readServerConfig,
  readTlsFiles,
  schemaProblems,
  splitHostPort,
  type ConfigProblem,
  type LoadedServerConfig,
  type ServerConfig,
  type VolumeConfig,
} from '../net/config.js';
export { parseSshRemote, splitCommand } from '../net/ssh-remote.js';
export type { SshTarget } from '../net/ssh.js';
export type { ClientTls } from '../net/connection.js';
export { repeatedKeys } from '../net/json-keys.js';
