// The messages between the main thread and a data-path worker thread (structured clone over the
// worker's MessagePort; certificates carry their private key, which never leaves the process).
// main → worker, one way: the mesh (a whole local config, or one applied xDS delta, in order),
// a certificate the main thread's SecretManager issued, the log level; as calls (answered by a
// `reply` with the same id): listen, dump, metrics, drain, stop.
// worker → main, one way: formatted log text (batched per event-loop turn); as calls: a
// certificate for an identity the worker does not hold yet.
import type { Config, LocalConfig } from '../config/types.js';
import type { DataPlaneListenOptions } from '../data-plane.js';
import type { IssuedIdentity } from '../identity/cert-source.js';
import type { MeshDelta } from '../state/mesh-store.js';

/** workerData of each worker thread. */
export interface WorkerInit {
  config: Config;
  /** 0-based; the first one also opens the SOCKS5 entry. */
  index: number;
  /** Where the mesh comes from: a local config (whole snapshots) or xDS (deltas). */
  mesh: 'local' | 'xds';
  /** The main thread's current log level (it may differ from config.logLevel after /logging). */
  logLevel: string;
  byteFlushIntervalMs: number | undefined;
  version: string;
}

export type MainCallOp =
  | { op: 'listen'; options: DataPlaneListenOptions }
  | { op: 'dump' }
  | { op: 'metrics' }
  | { op: 'drain'; deadlineMs: number }
  | { op: 'stop' };

export type ToWorker =
  | { t: 'mesh-local'; local: LocalConfig; reload: boolean }
  | { t: 'mesh-delta'; delta: MeshDelta }
  | { t: 'cert'; issued: IssuedIdentity }
  | { t: 'log-level'; level: string }
  | { t: 'call'; id: number; call: MainCallOp }
  | { t: 'cert-reply'; id: number; issued?: IssuedIdentity | undefined; error?: WireError | undefined };

export type FromWorker =
  | { t: 'log'; text: string }
  | { t: 'cert-fetch'; id: number; identity: string }
  | { t: 'reply'; id: number; value?: unknown; error?: WireError | undefined };

/** An error as it crosses the thread boundary (a ZtError keeps its code). */
export interface WireError {
  code: string | undefined;
  message: string;
}
