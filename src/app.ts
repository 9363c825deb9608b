// The composition root: builds every component from a Config, owns the start, reload,
// drain and stop order. Start-up errors are loud and final (thrown to main.ts);
// run-time errors never crash the process.
// The mesh comes from one of two sources: the local config (LOCAL_XDS_PATH, watched, swapped
// whole on reload) or istiod over delta xDS (XdsMesh: applied incrementally; readiness waits
// for the first response of each type). Either way a change prunes removed workloads (their
// connections, certificates, HBONE server identity) and re-authorizes live connections.
// Certificates come from a CertificateSource through SecretManager: istiod's CA (config.ca),
// or the built-in CA; local workloads' certificates are prefetched when the mesh shows them.
// The data path (listeners, HBONE pool and server, proxies: data-plane.ts) runs on this thread
// when ZTUNNEL_WORKER_THREADS=1, else on that many worker threads (workers/): this thread then
// keeps the mesh source, the certificates (the leader SecretManager), admin, readiness and
// metrics, and sends the workers every mesh change and certificate.
// Start: worker threads → mesh source → certificates → listeners → ready. Drain: not ready →
// stop accepting → GOAWAY → wait for connections up to the deadline → force-close → stop.
import fs from 'node:fs';
import type http from 'node:http';
import { PolicyStore } from './authorize/index.js';
import type { Config, LocalConfig } from './config/types.js';
import { DataPlane, type DataPlaneDump, type DataPlanePorts, buildIllegalPorts, localIdentitiesOf } from './data-plane.js';
import { ZtError, errorMessage } from './errors.js';
import { buildAuthorizeDecision, buildRouteDecision } from './explain/index.js';
import { CertificateAuthority } from './identity/ca.js';
import { LocalCaSource, type CertificateSource } from './identity/cert-source.js';
import { SecretManager } from './identity/secret-manager.js';
import { spiffeIdOfWorkload } from './identity/spiffe.js';
import { Readiness, startAdminServer, startReadinessServer, startStatsServer, closeServer } from './admin/index.js';
import type { ConnectionTracker } from './proxy/connection-tracker.js';
import { type MeshView, isLocalWorkload } from './proxy/proxy-context.js';
import { Telemetry } from './record/telemetry.js';
import { ProxyState } from './state/proxy-state.js';
import { XDS_READINESS_TASKS, ownIdentity, readRootCa, tokenReader } from './istiod.js';
import { DataPlaneWorkers, type WorkerDump } from './workers/data-plane-workers.js';
import type { AddressChange, XdsMesh } from './xds-mesh.js';

/** The mesh before its source has been read (start() reads it). */
const NO_MESH: LocalConfig = Object.freeze({ workloads: [], services: [], policies: [] });
type LocalConfigModule = typeof import('./config/local-config.js');

export const VERSION = '0.1.0';

export interface AppOptions {
  /** Overrides for tests: where log lines go, and a CA shared by several in-process ztunnels. */
  logDestination?: NodeJS.WritableStream;
  ca?: CertificateAuthority;
  /** Where workload certificates come from (e.g. istiod's CA: xds/ca-client.ts); default the built-in CA. */
  certificateSource?: CertificateSource;
  /** How often open connections' byte counts reach the metrics (default 5 s). */
  byteFlushIntervalMs?: number;
  /** xDS reconnect backoff bounds (tests shorten them; default 1 s doubling to 30 s). */
  xdsBackoffMs?: { initial: number; max: number };
}

export interface BoundPorts {
  outbound: number;
  inboundPlaintext: number;
  inbound: number;
  socks5: number | undefined;
  admin: number;
  stats: number;
  readiness: number;
}

export class App {
  readonly config: Config;
  readonly telemetry: Telemetry;
  readonly readiness = new Readiness();
  readonly secrets: SecretManager;
  private view: MeshView;
  /** Set when the mesh comes from istiod (config.xds). */
  private xds: XdsMesh | undefined;
  /**
   * The mesh source's module, loaded by start() only for the source in use: the YAML loader
   * (yaml, zod) or the xDS stack (gRPC, protobuf) — a ztunnel never carries both (idle RSS).
   */
  private localConfigModule: LocalConfigModule | undefined;
  private readonly xdsBackoffMs: AppOptions['xdsBackoffMs'];
  private readonly byteFlushIntervalMs: number | undefined;
  /** The data path on this thread (ZTUNNEL_WORKER_THREADS=1), else undefined. */
  private readonly plane: DataPlane | undefined;
  /** The data-path worker threads (ZTUNNEL_WORKER_THREADS ≥ 2), created by start(). */
  private workers: DataPlaneWorkers | undefined;
  private httpServers: http.Server[] = [];
  private inboundTransparent = false;
  private watcher: fs.FSWatcher | undefined;
  private reloadTimer: NodeJS.Timeout | undefined;
  private draining: Promise<void> | undefined;
  private bound: BoundPorts | undefined;
  /** The loop guard as /debug/route applies it: upstream's fixed ports plus whatever we bound. */
  private illegalPorts: ReadonlySet<number>;
  private markStopped: () => void = () => undefined;
  /** Resolves once the app has stopped (drained or stopped). */
  readonly stopped: Promise<void> = new Promise((resolve) => {
    this.markStopped = resolve;
  });

  constructor(config: Config, opts: AppOptions = {}) {
    this.config = config;
    this.illegalPorts = buildIllegalPorts(config);
    this.readiness.pending('state manager');
    this.readiness.pending('proxy');
    this.byteFlushIntervalMs = opts.byteFlushIntervalMs;
    this.telemetry = new Telemetry({
      logFormat: config.logFormat,
      logLevel: config.logLevel,
      accessLogOnlyFailed: config.accessLogOnlyFailed,
      clusterId: config.clusterId,
      version: VERSION,
      ...(opts.logDestination ? { destination: opts.logDestination } : {}),
      ...(opts.byteFlushIntervalMs ? { byteFlushIntervalMs: opts.byteFlushIntervalMs } : {}),
    });
    this.secrets = new SecretManager(opts.certificateSource ?? this.istiodCa() ?? new LocalCaSource(opts.ca ?? this.loadCa()), {
      onRenewalError: (id, err) => this.telemetry.log.warn({ scope: 'identity', identity: id, error: errorMessage(err) }, 'certificate issuance failed'),
      // Worker threads serve every certificate this thread issues (first ones and renewals).
      onIssued: (issued) => this.workers?.certificateIssued(issued),
    });
    this.telemetry.onLogLevel((level) => this.workers?.logLevel(level));
    this.xdsBackoffMs = opts.xdsBackoffMs;
    if (config.xds) for (const task of Object.values(XDS_READINESS_TASKS)) this.readiness.pending(task);
    this.view = this.buildView(NO_MESH);
    this.plane =
      config.workerThreads > 1 ? undefined : new DataPlane(config, { telemetry: this.telemetry, secrets: this.secrets, view: () => this.view });
  }

  /** This thread's live connections (only when the data path runs here: ZTUNNEL_WORKER_THREADS=1). */
  get tracker(): ConnectionTracker {
    if (!this.plane) throw new Error('the data path runs on worker threads (ZTUNNEL_WORKER_THREADS > 1); see collectConfigDump()');
    return this.plane.tracker;
  }

  /**
   * istiod's CA when config.ca is set (CA_ADDRESS, or the xDS address without FAKE_CA /
   * LOCAL_CA_*). The root is read now (a bad CA_ROOT_CA is a start-up error); the gRPC client
   * module is loaded at the first certificate request.
   */
  private istiodCa(): CertificateSource | undefined {
    const c = this.config;
    const ca = c.ca;
    if (ca === undefined) return undefined;
    const rootPem = readRootCa(ca.rootCa, 'CA_ROOT_CA');
    const make = async (): Promise<CertificateSource> => {
      const { IstioCaClient } = await import('./xds/ca-client.js');
      return new IstioCaClient({
        address: ca.address,
        tls: { ca: rootPem, serverName: ca.altHostname },
        token: tokenReader(c.authToken, (m) => this.telemetry.log.warn({ scope: 'identity' }, m)),
        ownIdentity: ownIdentity(c),
        clusterId: c.clusterId,
        headers: ca.headers,
        validitySeconds: Math.round(c.secretTtlMs / 1000),
      });
    };
    let client: Promise<CertificateSource> | undefined;
    return {
      name: `istiod CA at ${ca.address}`,
      issue: async (identity) => (await (client ??= make())).issue(identity),
      close: () => void client?.then((cl) => cl.close?.(), () => undefined),
    };
  }

  /** Reads the mesh source (start-up errors are thrown): the local file, or opens the xDS stream. */
  private async startMeshSource(): Promise<void> {
    const c = this.config;
    if (c.xds) {
      const { XdsMesh } = await import('./xds-mesh.js');
      const xds: XdsMesh = new XdsMesh({
        config: c,
        log: (level, message) => this.telemetry.log[level]({ scope: 'xds' }, message),
        authzLog: (msg, fields) => this.telemetry.log.info({ scope: 'authorization', ...fields }, msg),
        onAddresses: (change) => this.onXdsAddresses(change),
        onPolicies: () => this.onXdsPolicies(),
        // The worker threads replay each applied delta into their own stores, in order.
        onDelta: (delta) => this.workers?.meshDelta(delta),
        onFirstResponse: (typeUrl) => {
          this.readiness.ready(XDS_READINESS_TASKS[typeUrl] ?? typeUrl);
          this.telemetry.log.info({ scope: 'xds', typeUrl, ...xds.store.size }, 'first xDS response applied');
        },
        ...(this.xdsBackoffMs ? { initialBackoffMs: this.xdsBackoffMs.initial, maxBackoffMs: this.xdsBackoffMs.max } : {}),
      });
      this.xds = xds;
      this.view = { state: xds.store, policies: xds.policies };
      xds.start();
    } else {
      this.localConfigModule = await import('./config/local-config.js');
      const local = this.loadLocalConfig();
      this.view = this.buildView(local);
      this.workers?.meshLocal(local, false);
    }
    this.readiness.ready('state manager');
    // Certificates of the local workloads are fetched ahead of their first connection.
    for (const id of this.localIdentities()) this.secrets.prefetch(id);
  }

  private loadCa(): CertificateAuthority {
    const { localCaCert, localCaKey } = this.config;
    if (localCaCert && localCaKey) return CertificateAuthority.fromFiles(localCaCert, localCaKey);
    this.telemetry.log.warn(
      { scope: 'identity' },
      'LOCAL_CA_CERT/LOCAL_CA_KEY not set: using an ephemeral root CA that only this process trusts; other ztunnels will refuse it (create a shared root with `ztunnel-ts ca create --out DIR`)',
    );
    return CertificateAuthority.generate();
  }

  private loadLocalConfig(): LocalConfig {
    const m = this.localConfigModule;
    if (m === undefined) throw new Error('the local config loader is not loaded (start() loads it)');
    if (this.config.localXdsPath) return m.loadLocalConfigFile(this.config.localXdsPath);
    if (this.config.localXds) return m.parseLocalConfig(this.config.localXds, 'LOCAL_XDS');
    return NO_MESH;
  }

  private buildView(local: LocalConfig): MeshView {
    return {
      state: new ProxyState(local),
      policies: new PolicyStore(local.policies, (msg, fields) => this.telemetry.log.info({ scope: 'authorization', ...fields }, msg)),
    };
  }

  /** Bind every listener; resolves when ready. Throws (start-up error) if any bind fails. */
  async start(): Promise<BoundPorts> {
    const c = this.config;
    try {
      // The worker threads first: every mesh message reaches them in order from the first one.
      if (this.plane === undefined) {
        this.workers = new DataPlaneWorkers({
          meshSnapshot: () => (this.xds ? { deltas: this.xds.store.snapshot() } : { local: this.view.state.config }),
          config: c,
          count: c.workerThreads,
          mesh: c.xds ? 'xds' : 'local',
          telemetry: this.telemetry,
          secrets: this.secrets,
          byteFlushIntervalMs: this.byteFlushIntervalMs,
          version: VERSION,
        });
      }
      await this.startMeshSource();
    } catch (err) {
      await this.stop();
      throw err;
    }
    try {
      const data: DataPlanePorts = this.plane ? await this.plane.listen({ reusePort: false, socks5: true }) : await this.workers!.listen();
      this.inboundTransparent = data.inboundTransparent;
      const admin = await startAdminServer({
        host: c.adminBindAddress,
        port: c.ports.admin,
        configDump: () => this.collectConfigDump(),
        telemetry: this.telemetry,
        onQuit: () => this.drain(),
        // `ztunnel-ts explain` asks these: the same pure route and authorize functions the data path runs.
        debug: {
          route: (q) =>
            buildRouteDecision(this.view.state, {
              ...q,
              nodeName: c.proxyMode === 'node' ? c.nodeName : undefined,
              network: c.network,
              illegalPorts: this.illegalPorts,
              hbonePort: c.ports.hboneTarget,
            }),
          authorize: (q) => buildAuthorizeDecision(this.view.state, this.view.policies, { ...q, nodeName: c.nodeName, network: c.network }),
        },
      });
      const stats = await startStatsServer({ host: c.bindAddress, port: c.ports.stats, metrics: () => this.metricsText() });
      const ready = await startReadinessServer({ host: c.bindAddress, port: c.ports.readiness, readiness: this.readiness });
      this.httpServers.push(admin, stats, ready);
      this.illegalPorts = buildIllegalPorts(c, [data.outbound, data.inboundPlaintext, data.inbound, data.socks5]);
      this.bound = {
        outbound: data.outbound,
        inboundPlaintext: data.inboundPlaintext,
        inbound: data.inbound,
        socks5: data.socks5,
        admin: portOf(admin),
        stats: portOf(stats),
        readiness: portOf(ready),
      };
    } catch (err) {
      await this.stop();
      throw err instanceof ZtError ? err : new ZtError('ZT_ERR_NATIVE', `cannot start listeners: ${errorMessage(err)}`, { cause: err });
    }
    this.watchLocalConfig();
    this.readiness.ready('proxy');
    this.telemetry.log.info(
      {
        scope: 'app',
        mode: c.proxyMode,
        node: c.nodeName ?? '',
        ports: JSON.stringify(this.bound),
        originalSource: this.inboundTransparent,
        workerThreads: c.workerThreads,
        workloads: this.view.state.workloadsByUid.size,
        source: this.xds ? `xds ${c.xds?.address ?? ''}` : 'local',
      },
      'ztunnel-ts ready',
    );
    return this.bound;
  }

  /** /metrics: this thread's registry, summed with the worker threads' when there are any. */
  private async metricsText(): Promise<string> {
    if (!this.workers) return this.telemetry.registry.metrics();
    return this.workers.metrics(await this.telemetry.registry.getMetricsAsJSON());
  }

  ports(): BoundPorts {
    if (!this.bound) throw new Error('not started');
    return this.bound;
  }

  /** Swap in a new local config; a bad one is refused and the old one stays in force. */
  reload(): boolean {
    if (this.xds) return false;
    let local: LocalConfig;
    try {
      local = this.loadLocalConfig();
    } catch (err) {
      this.telemetry.log.error({ scope: 'config', error: errorMessage(err) }, 'local config reload refused; keeping the previous config');
      return false;
    }
    this.view = this.buildView(local);
    this.workers?.meshLocal(local, true);
    this.telemetry.log.info(
      { scope: 'config', workloads: local.workloads.length, services: local.services.length, policies: local.policies.length },
      'local config reloaded',
    );
    // Workloads that are gone (or moved to another node) lose their connections, their
    // certificates and their HBONE server identity, as upstream drains a removed pod.
    this.pruneRemovedWorkloads();
    // Every reload re-checks live inbound connections: policies and the workloads'
    // authorizationPolicies may both have changed (O(live connections), no I/O).
    this.reauthorize();
    return true;
  }

  /** One Address response from istiod was applied to the store. */
  private onXdsAddresses(change: AddressChange): void {
    if (change.removedOrMovedUids.length > 0) this.pruneRemovedWorkloads();
    // New local workloads: their certificates are fetched before their first connection.
    for (const w of change.upsertedWorkloads) if (isLocalWorkload(this.config, w)) this.secrets.prefetch(spiffeIdOfWorkload(w));
    // A local workload's authorizationPolicies (WorkloadSelector policies) may have changed.
    if (change.upsertedWorkloads.some((w) => isLocalWorkload(this.config, w))) this.reauthorize();
  }

  /** One Authorization response from istiod was applied: new policies, re-check live connections. */
  private onXdsPolicies(): void {
    if (!this.xds) return;
    this.view = { state: this.xds.store, policies: this.xds.policies };
    this.reauthorize();
  }

  /** The SPIFFE identities of the workloads this ztunnel serves now. */
  private localIdentities(): Set<string> {
    return localIdentitiesOf(this.config, this.view.state);
  }

  /**
   * Workloads that are gone (or moved to another node) lose their connections, their
   * certificates and their HBONE server identity. Worker threads do their part when the same
   * change reaches them; this thread drops the certificates it renews.
   */
  private pruneRemovedWorkloads(): void {
    let closed = 0;
    let dropped: string[];
    let keep: Set<string>;
    if (this.plane) {
      ({ closed, dropped, keep } = this.plane.pruneRemovedWorkloads());
    } else {
      keep = this.localIdentities();
      dropped = this.secrets.retainOnly(keep);
    }
    for (const id of keep) this.secrets.prefetch(id);
    if (closed || dropped.length) {
      this.telemetry.log.info({ scope: 'config', closed, identities: dropped.join(',') }, 'removed workloads: connections closed, certificates dropped');
    }
  }

  /**
   * Re-evaluate every live inbound connection against the current policies. On worker threads
   * each one re-checks its own connections when the change reaches it; this returns 0 then.
   */
  reauthorize(): number {
    if (!this.plane) return 0;
    const closed = this.plane.reauthorize();
    if (closed) this.telemetry.log.info({ scope: 'authorization', closed }, 'closed connections denied by the new policies');
    return closed;
  }

  private watchLocalConfig(): void {
    const path = this.config.localXdsPath;
    if (!path) return;
    const schedule = (): void => {
      if (this.reloadTimer) clearTimeout(this.reloadTimer);
      this.reloadTimer = setTimeout(() => {
        this.reloadTimer = undefined;
        this.reload();
      }, 200);
      this.reloadTimer.unref();
    };
    // Watch the directory: editors and `mv` replace the file (new inode).
    try {
      const dir = path.includes('/') ? path.slice(0, path.lastIndexOf('/')) || '/' : '.';
      const base = path.slice(path.lastIndexOf('/') + 1);
      this.watcher = fs.watch(dir, (_ev, name) => {
        if (!name || name === base) schedule();
      });
      this.watcher.unref();
    } catch {
      fs.watchFile(path, { interval: 1000, persistent: false }, schedule);
    }
  }

  /** /config_dump with the data path on this thread (ZTUNNEL_WORKER_THREADS=1); collectConfigDump() in general. */
  configDump(): unknown {
    if (!this.plane) throw new Error('the data path runs on worker threads; use collectConfigDump()');
    return this.buildConfigDump([{ worker: 0, threadId: 0, ...this.plane.dump() }]);
  }

  /** /config_dump: this thread's state and every data-path thread's connections, sessions and counts. */
  async collectConfigDump(): Promise<unknown> {
    if (this.plane) return this.configDump();
    return this.buildConfigDump(this.workers ? await this.workers.dump() : []);
  }

  private buildConfigDump(threads: WorkerDump[]): unknown {
    const { state } = this.view;
    const sum = (f: (d: DataPlaneDump) => number): number => threads.reduce((n, d) => n + f(d), 0);
    return {
      workloads: state.config.workloads,
      services: state.config.services,
      policies: state.config.policies,
      certificates: this.secrets.dump(),
      connections: {
        inbound: threads.flatMap((d) => d.connections.inbound),
        outbound: threads.flatMap((d) => d.connections.outbound),
      },
      pool: { sessions: sum((d) => d.pool.sessions), failingFast: threads.flatMap((d) => d.pool.failingFast) },
      hboneServer: {
        sessions: sum((d) => d.hboneServer.sessions),
        identities: [...new Set(threads.flatMap((d) => d.hboneServer.identities))].sort(),
      },
      // Per data-path thread: what each listener accepted there, what is open (how the kernel spread the load).
      workers: threads.map((d) => ({
        worker: d.worker,
        threadId: d.threadId,
        accepted: d.accepted,
        connections: d.connections.inbound.length + d.connections.outbound.length,
        poolSessions: d.pool.sessions,
        hboneServerSessions: d.hboneServer.sessions,
      })),
      ...(this.xds ? { xds: this.xds.state() } : {}),
      config: { ...this.config, originalSource: this.inboundTransparent },
      version: { component: 'ztunnel-ts', version: VERSION, node: process.version },
    };
  }

  /** Graceful drain; idempotent. Resolves when everything is closed. */
  drain(): Promise<void> {
    if (!this.draining) this.draining = this.doDrain();
    return this.draining;
  }

  private async doDrain(): Promise<void> {
    const deadline = this.config.connectionTerminationDeadlineMs;
    this.readiness.pending('draining');
    this.telemetry.log.info({ scope: 'app', deadlineMs: deadline, open: this.plane?.tracker.size ?? 'on worker threads' }, 'draining');
    if (this.plane) await this.plane.drain(deadline);
    else await this.workers?.drain(deadline);
    await this.stop();
  }

  /** Close everything now (no grace). */
  async stop(): Promise<void> {
    this.xds?.stop();
    if (this.reloadTimer) clearTimeout(this.reloadTimer);
    this.watcher?.close();
    if (this.config.localXdsPath) fs.unwatchFile(this.config.localXdsPath);
    await this.plane?.stop();
    const workers = this.workers;
    this.workers = undefined;
    await workers?.stop();
    await Promise.all(this.httpServers.map((s) => closeServer(s)));
    this.httpServers = [];
    this.secrets.close();
    await this.telemetry.close();
    this.markStopped();
  }
}

function portOf(s: http.Server): number {
  const a = s.address();
  return typeof a === 'object' && a ? a.port : 0;
}
