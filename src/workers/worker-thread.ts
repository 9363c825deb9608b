// One data-path worker thread (ZTUNNEL_WORKER_THREADS ≥ 2): its own event loop running a
// DataPlane — SO_REUSEPORT capture listeners, HBONE pool and server, proxies, splice engine —
// over its own copy of the mesh, which the main thread keeps current (whole local configs, or
// every xDS delta in order). Certificates come from a follower SecretManager: it asks the main
// thread for an identity it does not hold, and takes every renewal the main thread pushes.
// Its Telemetry has its own metrics registry (the main thread sums them for /metrics) and sends
// its formatted log lines to the main thread, one message per event-loop turn.
// Must never: write to stdout itself (lines would interleave with the main thread's), renew a
// certificate itself, or die on a bug (uncaught errors are counted and logged, like main.ts does).
import { parentPort, workerData } from 'node:worker_threads';
import { PolicyStore } from '../authorize/index.js';
import type { LocalConfig } from '../config/types.js';
import { DataPlane } from '../data-plane.js';
import { ZtError, errorMessage } from '../errors.js';
import type { CertificateSource, IssuedIdentity } from '../identity/cert-source.js';
import { SecretManager } from '../identity/secret-manager.js';
import { type MeshView, isLocalWorkload } from '../proxy/proxy-context.js';
import { Telemetry } from '../record/telemetry.js';
import { MeshStore, type MeshDelta } from '../state/mesh-store.js';
import { ProxyState } from '../state/proxy-state.js';
import type { FromWorker, MainCallOp, ToWorker, WireError, WorkerInit } from './protocol.js';

const port = parentPort;
if (port === null) throw new Error('worker-thread.ts runs as a worker thread only');
const init = workerData as WorkerInit;
const config = init.config;

function send(m: FromWorker): void {
  port!.postMessage(m);
}

function toWire(err: unknown): WireError {
  return { code: err instanceof ZtError ? err.code : undefined, message: errorMessage(err) };
}

/** Log text to the main thread: collected during one event-loop turn, sent as one message. */
class ForwardedLog {
  private pending = '';
  private scheduled = false;

  write(text: string): boolean {
    this.pending += text;
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(() => this.flushNow());
    }
    return true;
  }

  flushNow(): void {
    this.scheduled = false;
    if (this.pending === '') return;
    const text = this.pending;
    this.pending = '';
    send({ t: 'log', text });
  }

  flush(cb?: (err?: Error) => unknown): void {
    this.flushNow();
    cb?.();
  }
}

const logOut = new ForwardedLog();
const telemetry = new Telemetry({
  logFormat: config.logFormat,
  logLevel: init.logLevel,
  accessLogOnlyFailed: config.accessLogOnlyFailed,
  clusterId: config.clusterId,
  version: init.version,
  destination: logOut as unknown as NodeJS.WritableStream,
  processMetrics: false,
  ...(init.byteFlushIntervalMs ? { byteFlushIntervalMs: init.byteFlushIntervalMs } : {}),
});

process.on('uncaughtException', (err) => telemetry.unexpected('uncaughtException', 'worker', err));
process.on('unhandledRejection', (err) => telemetry.unexpected('unhandledRejection', 'worker', err));

/** Certificates from the main thread's SecretManager. */
let nextCertId = 1;
const certWaiters = new Map<number, { resolve: (i: IssuedIdentity) => void; reject: (e: Error) => void }>();
const mainThreadSource: CertificateSource = {
  name: 'the main thread',
  issue: (identity) =>
    new Promise<IssuedIdentity>((resolve, reject) => {
      const id = nextCertId++;
      certWaiters.set(id, { resolve, reject });
      send({ t: 'cert-fetch', id, identity });
    }),
};
const secrets = new SecretManager(mainThreadSource, {
  rotation: 'pushed',
  // The main thread logs its own issuance failures; this one only adds which thread waited.
  onRenewalError: (id, err) => telemetry.log.debug({ scope: 'identity', identity: id, error: errorMessage(err) }, 'certificate not available from the main thread'),
});

// The mesh: the policies are compiled here too, without logging (the main thread logs them once).
let store: MeshStore | undefined;
let view: MeshView = {
  state: new ProxyState({ workloads: [], services: [], policies: [] }),
  policies: new PolicyStore([]),
};
if (init.mesh === 'xds') {
  store = new MeshStore();
  view = { state: store, policies: new PolicyStore([]) };
}

const plane = new DataPlane(config, { telemetry, secrets, view: () => view });

function afterPrune(): void {
  const { closed } = plane.pruneRemovedWorkloads();
  if (closed) telemetry.log.info({ scope: 'config', closed }, 'removed workloads: connections closed');
}

function afterReauthorize(): void {
  const closed = plane.reauthorize();
  if (closed) telemetry.log.info({ scope: 'authorization', closed }, 'closed connections denied by the new policies');
}

function applyLocal(local: LocalConfig, reload: boolean): void {
  view = { state: new ProxyState(local), policies: new PolicyStore(local.policies) };
  if (!reload) return;
  afterPrune();
  afterReauthorize();
}

function applyDelta(delta: MeshDelta): void {
  if (store === undefined) return;
  if (delta.kind === 'addresses') {
    const change = store.applyAddresses(delta.upserts, delta.removals);
    if (change.removedOrMovedUids.length > 0) afterPrune();
    if (change.upsertedWorkloads.some((w) => isLocalWorkload(config, w))) afterReauthorize();
    return;
  }
  store.applyPolicies(delta.upserts, delta.removals);
  view = { state: store, policies: new PolicyStore(store.policyList()) };
  afterReauthorize();
}

async function answer(call: MainCallOp): Promise<unknown> {
  switch (call.op) {
    case 'listen':
      return plane.listen(call.options);
    case 'dump':
      return plane.dump();
    case 'metrics':
      telemetry.flushBytes();
      return telemetry.registry.getMetricsAsJSON();
    case 'drain':
      await plane.drain(call.deadlineMs);
      await telemetry.close();
      return undefined;
    case 'stop':
      await plane.stop();
      await telemetry.close();
      secrets.close();
      return undefined;
  }
}

port.on('message', (m: ToWorker) => {
  switch (m.t) {
    case 'mesh-local':
      applyLocal(m.local, m.reload);
      return;
    case 'mesh-delta':
      applyDelta(m.delta);
      return;
    case 'cert':
      secrets.install(m.issued);
      return;
    case 'log-level':
      try {
        telemetry.setLogLevel(m.level);
      } catch {
        // The main thread validated it.
      }
      return;
    case 'cert-reply': {
      const w = certWaiters.get(m.id);
      certWaiters.delete(m.id);
      if (!w) return;
      if (m.issued) w.resolve(m.issued);
      else w.reject(new ZtError('ZT_ERR_IDENTITY_UNAVAILABLE', m.error?.message ?? 'no certificate'));
      return;
    }
    case 'call':
      answer(m.call).then(
        (value) => {
          logOut.flushNow();
          send({ t: 'reply', id: m.id, value });
        },
        (err: unknown) => {
          logOut.flushNow();
          send({ t: 'reply', id: m.id, error: toWire(err) });
        },
      );
      return;
  }
});
