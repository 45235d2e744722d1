/**
 * resync's programmatic API: everything the CLI does, as typed functions.
 * Re-exports only; each function's documentation lives with its source.
 * See docs/api.md for a walk-through and a runnable example.
 *
 * - Offline transport (files): signatureFile, deltaFile, patchFile, recoverImage;
 *   the same with librsync's formats: rdiffSignatureFile, rdiffDeltaFile, rdiffPatchFile.
 * - Over TCP: serve (server), push and pull (client).
 * - Comparison: verifyFiles, verifyRemote; dry runs: dryRunPush, dryRunPull, dryRunDelta.
 * - In memory: signatureOf, diff, applyDelta.
 * - Errors: SyncError and its subclasses, each with a stable `code`.
 *
 * Lower layers have their own entry points: `resync/core` (the pure engine),
 * `resync/format` (file formats) and `resync/protocol` (wire messages).
 */

// Offline transport over files.
export {
  signatureFile,
  deltaFile,
  patchFile,
  recoverImage,
  loadSignatureFile,
  hashImage,
  type Progress,
  type ProgressFn,
  type SignatureFileOptions,
  type DeltaFileOptions,
  type PatchFileOptions,
  type FileResult,
  type InPlaceResult,
  type RecoverOutcome,
} from './api/files.js';

// librsync (rdiff) signature and delta files; see docs/rdiff-interop.md.
export {
  rdiffSignatureFile,
  rdiffDeltaFile,
  rdiffPatchFile,
  type RdiffSignatureFileOptions,
  type RdiffDeltaFileOptions,
  type RdiffPatchFileOptions,
  type RdiffFileResult,
} from './api/rdiff.js';

// Network: server and client.
export {
  serve,
  serveConfigFile,
  ResyncServer,
  push,
  pushToReplicas,
  pull,
  recoverRemote,
  type Replica,
  type ReplicaOutcome,
  type FanoutResult,
  type FanoutOptions,
  type ServeOptions,
  type ServeHandle,
  type ServerEvent,
  type ClientOptions,
  type SyncResult,
  type RemoteRecoverResult,
} from './api/net.js';
export { ConfigError, loadServerConfig, readServerConfig, readSecretFile, parseRemote, type ConfigProblem, type LoadedServerConfig, type ServerConfig, type VolumeConfig } from './api/config.js';
export { Throttle } from './net/throttle.js';

// Comparison and dry runs.
export {
  verifyFiles,
  verifyRemote,
  DEFAULT_MAX_RANGES,
  type DiffRange,
  type VerifyReport,
  type RemoteVerifyReport,
  type VerifyFilesOptions,
  type VerifyRemoteOptions,
} from './api/verify.js';
export { dryRunPush, dryRunPull, dryRunDelta, type DryRunReport, type RemoteDryRunReport } from './api/dry-run.js';

// The in-memory verbs.
export { signatureOf, diff, applyDelta, type SignatureOptions } from './core/whole.js';
export type { Signature, SignatureParams } from './core/signature.js';
export type { DeltaOp, CopyOp, LiteralOp, DeltaStats } from './core/ops.js';
export type { StrongAlg } from './core/strong.js';

// Errors and their codes.
export {
  SyncError,
  ParamError,
  UnexpectedEofError,
  CorruptInputError,
  LimitExceededError,
  CopyOutOfBoundsError,
  VerifyError,
  BasisMismatchError,
  isSyncError,
  ERROR_CODES,
  type ErrorCode,
} from './core/errors.js';
export { JournalError } from './io/errors.js';
export { ProtocolError, UnexpectedMessageError } from '../protocol/errors.js';
export { FrameTooLargeError } from './bytes/frame.js';
export { NbdError, NbdTlsError, type NbdTlsReason } from './io/nbd/codec.js';
