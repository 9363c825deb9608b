// The data path of one thread: the capture listeners (15001, 15006, 15008, and SOCKS5 when
// enabled), the HBONE pool and server, the outbound and inbound proxies, the splice engine, and
// the tracker of this thread's live connections. With ZTUNNEL_WORKER_THREADS=1 the App runs one
// on the main thread; with N ≥ 2 each worker thread (workers/worker-thread.ts) runs its own, with
// SO_REUSEPORT listeners on the same ports, and the kernel spreads connections across them
// (TPROXY included: test/netns/tproxy.test.ts).
// It reads the mesh through a MeshView that its owner swaps (reload, xDS deltas), and serves
// certificates from the SecretManager it is given (the main thread's, or a worker's follower).
// Must never: decide config, readiness or metrics exposure (its owner does), or throw out of a
// connection handler (the proxies complete every record in try/finally).
import type net from 'node:net';
import { type CaptureListener, listenCapture, listenPlain, originalDestination } from './capture/listeners.js';
import { handleSocks5 } from './capture/socks5.js';
import type { Config } from './config/types.js';
import { acquireSpliceWorker, releaseSpliceWorker } from './copy/relay.js';
import { ZtError, errorMessage } from './errors.js';
import type { SecretManager } from './identity/secret-manager.js';
import { spiffeIdOfWorkload } from './identity/spiffe.js';
import { ConnectionTracker } from './proxy/connection-tracker.js';
import { InboundProxy } from './proxy/inbound.js';
import { OutboundProxy } from './proxy/outbound.js';
import { type MeshView, type ProxyContext, findLocalWorkloadByIp, isLocalWorkload } from './proxy/proxy-context.js';
import type { Telemetry } from './record/telemetry.js';
import type { MeshReader } from './state/mesh-view.js';
import { h2TuningOf } from './tunnel/h2-settings.js';
import { HbonePool } from './tunnel/hbone-pool.js';
import { HboneServer } from './tunnel/hbone-server.js';

export interface DataPlaneListenOptions {
  /** SO_REUSEPORT on 15001/15006/15008: several threads share each port. */
  reusePort: boolean;
  /** Bind these instead of config.ports (the other threads join the ports the first one got; a restarted thread its old ones). */
  ports?: { outbound: number; inboundPlaintext: number; inbound: number; socks5?: number | undefined } | undefined;
  /** Also open the SOCKS5 entry (config.enableSocks5; one thread only: it is not shared). */
  socks5: boolean;
}

export interface DataPlanePorts {
  outbound: number;
  inboundPlaintext: number;
  inbound: number;
  socks5: number | undefined;
  /** Did the inbound listeners get IP_TRANSPARENT (the app sees the client's IP)? */
  inboundTransparent: boolean;
}

/** This thread's part of /config_dump. */
export interface DataPlaneDump {
  connections: ReturnType<ConnectionTracker['dump']>;
  pool: { sessions: number; failingFast: ReturnType<HbonePool['unreachablePeers']> };
  hboneServer: { sessions: number; identities: string[] };
  /** Connections each listener accepted on this thread since start (how the kernel spread them). */
  accepted: { outbound: number; inboundPlaintext: number; inbound: number };
}

/**
 * The loop guard: ports that are never a destination — upstream's fixed ones and ours (config;
 * the ports actually bound are added once known, since 0 means "any").
 */
export function buildIllegalPorts(config: Config, bound: readonly (number | undefined)[] = []): Set<number> {
  const ports = new Set<number>([config.ports.outbound, config.ports.inboundPlaintext, config.ports.inbound, 15001, 15006, 15008]);
  if (config.enableSocks5) ports.add(config.ports.socks5).add(15080);
  for (const p of bound) if (p !== undefined) ports.add(p);
  ports.delete(0);
  return ports;
}

/** The SPIFFE identities of the workloads this ztunnel serves in this mesh. */
export function localIdentitiesOf(config: Config, state: MeshReader): Set<string> {
  const ids = new Set<string>();
  for (const w of state.workloadsByUid.values()) if (isLocalWorkload(config, w)) ids.add(spiffeIdOfWorkload(w));
  return ids;
}

export class DataPlane {
  readonly tracker = new ConnectionTracker();
  private readonly config: Config;
  private readonly telemetry: Telemetry;
  private readonly secrets: SecretManager;
  private readonly view: () => MeshView;
  private readonly ctx: ProxyContext;
  private readonly pool: HbonePool;
  private readonly hboneServer: HboneServer;
  private readonly inbound: InboundProxy;
  private readonly outbound: OutboundProxy;
  /** The loop guard: upstream's fixed ports plus whatever we actually bound. */
  private readonly illegalPorts: Set<number>;
  private listeners: CaptureListener[] = [];
  private inboundTransparent = false;
  private outboundTransparent = false;
  private spliceAcquired = false;
  private readonly accepted = { outbound: 0, inboundPlaintext: 0, inbound: 0 };

  constructor(config: Config, deps: { telemetry: Telemetry; secrets: SecretManager; view: () => MeshView }) {
    this.config = config;
    this.telemetry = deps.telemetry;
    this.secrets = deps.secrets;
    this.view = deps.view;
    this.illegalPorts = buildIllegalPorts(config);
    const plane = this;
    this.ctx = {
      config,
      telemetry: this.telemetry,
      secrets: this.secrets,
      tracker: this.tracker,
      view: deps.view,
      illegalPorts: this.illegalPorts,
      inboundTransparent: () => plane.inboundTransparent,
      outboundTransparent: () => plane.outboundTransparent,
    };
    const tuning = h2TuningOf(config);
    this.pool = new HbonePool({
      tuning,
      maxStreamsPerConnection: config.poolMaxStreamsPerConnection,
      idleReleaseMs: config.poolUnusedReleaseTimeoutMs,
      connectTimeoutMs: config.connectTimeoutMs,
      mark: config.packetMark,
      onSpoofFailure: (err) => this.telemetry.log.warn({ scope: 'outbound', error: errorMessage(err) }, 'original source unavailable; connecting unspoofed'),
    });
    this.inbound = new InboundProxy(this.ctx);
    this.outbound = new OutboundProxy(this.ctx, this.pool);
    this.hboneServer = new HboneServer({
      tuning,
      trustDomain: config.trustDomain,
      identityFor: (ip) => {
        const w = findLocalWorkloadByIp(this.ctx, ip);
        return w ? spiffeIdOfWorkload(w) : undefined;
      },
      tlsFor: (identity) => this.secrets.peekTlsOptions(identity) ?? this.secrets.fetch(identity),
      onStream: (stream, headers, peer) => this.inbound.handleStream(stream, headers, peer),
      onRejected: ({ peerAddr, localAddr, reason, peerIdentity }) =>
        this.telemetry.earlyDeny('inbound', peerAddr, localAddr, reason, peerIdentity ? { 'src.identity': peerIdentity } : undefined),
    });
  }

  /** Bind the capture listeners (and SOCKS5); throws (a start-up error) if any bind fails, closing what was bound. */
  async listen(o: DataPlaneListenOptions): Promise<DataPlanePorts> {
    const c = this.config;
    const mark = c.proxyMode === 'node' ? undefined : c.packetMark;
    const ports = o.ports ?? c.ports;
    const common = { host: c.bindAddress, transparent: c.enableOrigSrc, mark, reusePort: o.reusePort };
    try {
      const outbound = await listenCapture({
        ...common,
        port: ports.outbound,
        onConnection: (s) => {
          this.accepted.outbound++;
          this.outbound.handle(s, originalDestination(s));
        },
      });
      this.listeners.push(outbound);
      const plaintext = await listenCapture({
        ...common,
        port: ports.inboundPlaintext,
        onConnection: (s) => {
          this.accepted.inboundPlaintext++;
          this.inbound.handlePlaintext(s, originalDestination(s));
        },
      });
      this.listeners.push(plaintext);
      const hbone = await listenCapture({
        ...common,
        port: ports.inbound,
        allowHalfOpen: false,
        onConnection: (s) => {
          this.accepted.inbound++;
          this.hboneServer.handleSocket(s);
        },
      });
      this.listeners.push(hbone);
      this.inboundTransparent = hbone.transparent && plaintext.transparent && c.enableOrigSrc !== false;
      // Node mode: outbound leaves from the pod's own IP so the peer can deliver with it.
      this.outboundTransparent = c.proxyMode === 'node' && outbound.transparent && c.enableOrigSrc !== false;
      let socks5: number | undefined;
      if (o.socks5 && c.enableSocks5) {
        const l = await listenPlain('127.0.0.1', o.ports?.socks5 ?? c.ports.socks5, (s) => this.handleSocks5(s));
        this.listeners.push(l);
        socks5 = l.port;
      }
      for (const l of this.listeners) this.illegalPorts.add(l.port);
      if (c.spliceEnabled) {
        this.spliceAcquired = true;
        await acquireSpliceWorker();
      }
      return { outbound: outbound.port, inboundPlaintext: plaintext.port, inbound: hbone.port, socks5, inboundTransparent: this.inboundTransparent };
    } catch (err) {
      this.closeListeners();
      throw err instanceof ZtError ? err : new ZtError('ZT_ERR_NATIVE', `cannot start listeners: ${errorMessage(err)}`, { cause: err });
    }
  }

  private handleSocks5(socket: net.Socket): void {
    handleSocks5(
      socket,
      (host) => {
        for (const s of this.view().state.config.services) {
          if (s.hostname === host || `${s.name}.${s.namespace}` === host || s.name === host) return s.vips[0]?.address;
        }
        return undefined;
      },
      (target, answer) =>
        this.outbound.handle(socket, target, {
          onEstablished: () => answer.ok(),
          onFailed: (err) => answer.fail(err.code === 'ZT_ERR_HBONE_STATUS' || err.code === 'ZT_ERR_AUTHZ_DENIED'),
        }),
      (reason) => this.telemetry.log.warn({ scope: 'socks5', error: reason }, 'bad SOCKS5 request'),
    );
  }

  /**
   * The mesh changed: connections of local workloads that are gone (or moved to another node)
   * are closed, their certificates dropped here and their HBONE server identity too, as
   * upstream drains a removed pod. Returns what it did; the owner logs it.
   */
  pruneRemovedWorkloads(): { closed: number; dropped: string[]; keep: Set<string> } {
    const { state } = this.view();
    const closed = this.tracker.closeRemovedWorkloads(
      (uid) => {
        const w = state.workloadsByUid.get(uid);
        return w !== undefined && isLocalWorkload(this.config, w);
      },
      () => new ZtError('ZT_ERR_WORKLOAD_REMOVED', 'connection closed: its workload was removed from this node'),
    );
    const keep = localIdentitiesOf(this.config, state);
    const dropped = this.secrets.retainOnly(keep);
    this.hboneServer.retainIdentities(keep);
    return { closed, dropped, keep };
  }

  /** Re-evaluate every live inbound connection of this thread against the current policies. */
  reauthorize(): number {
    const view = this.view();
    return this.tracker.reauthorize(
      view.policies,
      (d) => new ZtError('ZT_ERR_POLICY_CHANGED', `connection closed due to policy change: ${d.reason}${d.policy ? ` (${d.policy})` : ''}`),
      (uid) => view.state.workloadsByUid.get(uid),
    );
  }

  dump(): DataPlaneDump {
    return {
      connections: this.tracker.dump(),
      pool: { sessions: this.pool.sessionCount(), failingFast: this.pool.unreachablePeers() },
      hboneServer: { sessions: this.hboneServer.sessionCount(), identities: this.hboneServer.identities() },
      accepted: { ...this.accepted },
    };
  }

  /**
   * Graceful drain of this thread: stop accepting, GOAWAY, wait for connections up to the
   * deadline, reset what is left, then stop.
   */
  async drain(deadlineMs: number): Promise<void> {
    this.closeListeners();
    this.hboneServer.drain();
    this.pool.close();
    const until = Date.now() + deadlineMs;
    while (this.tracker.size > 0 && Date.now() < until) await sleep(50);
    if (this.tracker.size > 0) {
      this.telemetry.log.info({ scope: 'app', open: this.tracker.size }, 'termination deadline reached; closing remaining connections');
      this.tracker.abortAll(new ZtError('ZT_ERR_DRAINING', 'closed at the termination deadline'));
      // Let the resets (RST / RST_STREAM) reach the peers before the sessions go.
      await sleep(50);
    }
    this.hboneServer.destroy();
    await this.stop();
  }

  /** Close everything now (no grace); idempotent. */
  async stop(): Promise<void> {
    this.closeListeners();
    this.tracker.abortAll(new ZtError('ZT_ERR_DRAINING', 'ztunnel stopped'));
    this.hboneServer.destroy();
    this.pool.destroy();
    if (this.spliceAcquired) {
      this.spliceAcquired = false;
      await releaseSpliceWorker();
    }
  }

  private closeListeners(): void {
    for (const l of this.listeners) l.server.close();
    this.listeners = [];
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
