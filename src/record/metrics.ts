// Istio's standard TCP metrics on a per-instance prom-client Registry (never the global
// one: two ztunnels may share a process in tests). Names, labels and the meaning of
// "received" (client → server) / "sent" (server → client) are upstream's exactly, so
// Istio dashboards and Kiali keep working (https://github.com/istio/ztunnel/blob/master/src/proxy/metrics.rs).
// Invariant: traffic label objects always have every key of TRAFFIC_LABEL_NAMES, in
// that order, with 'unknown' for anything missing.
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import type { Service, Workload } from '../config/types.js';
import type { ResponseFlag } from '../errors.js';
import type { ConnectionContext } from './types.js';

export const TRAFFIC_LABEL_NAMES = [
  'reporter',
  'source_workload',
  'source_canonical_service',
  'source_canonical_revision',
  'source_workload_namespace',
  'source_principal',
  'source_app',
  'source_version',
  'source_cluster',
  'destination_service',
  'destination_service_namespace',
  'destination_service_name',
  'destination_workload',
  'destination_canonical_service',
  'destination_canonical_revision',
  'destination_workload_namespace',
  'destination_principal',
  'destination_app',
  'destination_version',
  'destination_cluster',
  'request_protocol',
  'response_flags',
  'connection_security_policy',
] as const;

export type TrafficLabelName = (typeof TRAFFIC_LABEL_NAMES)[number];
export type TrafficLabels = Record<TrafficLabelName, string>;
export type Reporter = 'source' | 'destination';

const UNKNOWN = 'unknown';

function orUnknown(value: string | undefined): string {
  return value === undefined || value === '' ? UNKNOWN : value;
}

function workloadName(w: Workload | undefined): string {
  if (w === undefined) return UNKNOWN;
  return orUnknown(w.workloadName || w.name);
}

function workloadCluster(w: Workload | undefined, localClusterId: string): string {
  if (w === undefined) return UNKNOWN;
  return orUnknown(w.clusterId || localClusterId);
}

/**
 * The traffic labels of one connection with response_flags '-'. Pure. Source values come
 * from the source workload; source_principal only from a proven (mTLS) identity.
 */
export function buildTrafficLabels(ctx: ConnectionContext, localClusterId: string): TrafficLabels {
  const src = ctx.srcWorkload;
  const dst = ctx.dstWorkload;
  const svc: Service | undefined = ctx.dstService;
  return {
    reporter: ctx.direction === 'outbound' ? 'source' : 'destination',
    source_workload: workloadName(src),
    source_canonical_service: orUnknown(src?.canonicalName),
    source_canonical_revision: orUnknown(src?.canonicalRevision),
    source_workload_namespace: orUnknown(src?.namespace),
    source_principal: orUnknown(ctx.srcIdentity),
    source_app: orUnknown(src?.canonicalName),
    source_version: orUnknown(src?.canonicalRevision),
    source_cluster: workloadCluster(src, localClusterId),
    destination_service: orUnknown(svc?.hostname),
    destination_service_namespace: orUnknown(svc?.namespace),
    destination_service_name: orUnknown(svc?.name),
    destination_workload: workloadName(dst),
    destination_canonical_service: orUnknown(dst?.canonicalName),
    destination_canonical_revision: orUnknown(dst?.canonicalRevision),
    destination_workload_namespace: orUnknown(dst?.namespace),
    destination_principal: orUnknown(ctx.dstIdentity),
    destination_app: orUnknown(dst?.canonicalName),
    destination_version: orUnknown(dst?.canonicalRevision),
    destination_cluster: workloadCluster(dst, localClusterId),
    request_protocol: 'tcp',
    response_flags: '-',
    connection_security_policy: ctx.securityPolicy,
  };
}

/** Same labels (same key order, so the same hidden class) with the final flag. */
export function buildClosedLabels(labels: TrafficLabels, flag: ResponseFlag): TrafficLabels {
  return { ...labels, response_flags: flag };
}

export const UNEXPECTED_KINDS = ['handler', 'uncaughtException', 'unhandledRejection'] as const;
export type UnexpectedKind = (typeof UNEXPECTED_KINDS)[number];

export class IstioMetrics {
  readonly registry: Registry;
  readonly connectionsOpened: Counter<TrafficLabelName>;
  readonly connectionsClosed: Counter<TrafficLabelName>;
  readonly connectionsFailed: Counter<TrafficLabelName>;
  readonly receivedBytes: Counter<TrafficLabelName>;
  readonly sentBytes: Counter<TrafficLabelName>;
  readonly socketsOpen: Gauge<'reporter'>;
  readonly build: Gauge<'component' | 'tag'>;
  /** Bugs, not outcomes: a connection handler that threw, an uncaught exception, an unhandled rejection. */
  readonly unexpectedErrors: Counter<'kind'>;

  constructor(version: string | undefined, opts: { processMetrics?: boolean } = {}) {
    this.registry = new Registry();
    const registers = [this.registry];
    const traffic = (name: string, help: string): Counter<TrafficLabelName> =>
      // The name includes `_total`: prom-client (text format) exposes it unchanged.
      new Counter({ name, help, labelNames: TRAFFIC_LABEL_NAMES, registers });
    this.connectionsOpened = traffic('istio_tcp_connections_opened_total', 'The total number of TCP connections opened');
    this.connectionsClosed = traffic('istio_tcp_connections_closed_total', 'The total number of TCP connections closed');
    this.connectionsFailed = traffic('istio_tcp_connections_failed_total', 'The total number of TCP connections that failed');
    this.receivedBytes = traffic(
      'istio_tcp_received_bytes_total',
      'The size of total bytes received during request in case of a TCP connection (client to server)',
    );
    this.sentBytes = traffic(
      'istio_tcp_sent_bytes_total',
      'The size of total bytes sent during response in case of a TCP connection (server to client)',
    );
    this.socketsOpen = new Gauge({
      name: 'istio_tcp_sockets_open',
      // source: captured outbound sockets; destination: inbound connections being delivered
      // (15006 sockets, HBONE CONNECT streams, same-node hand-overs), see proxy/deliver.ts.
      help: 'The number of sockets currently open, by reporter',
      labelNames: ['reporter'] as const,
      registers,
    });
    this.build = new Gauge({
      name: 'istio_build',
      help: 'Istio component build info',
      labelNames: ['component', 'tag'] as const,
      registers,
      // Worker threads' registries are summed into one (/metrics); this one is not a count.
      aggregator: 'first',
    });
    this.build.set({ component: 'ztunnel', tag: orUnknown(version) }, 1);
    this.unexpectedErrors = new Counter({
      name: 'ztunnel_ts_unexpected_errors_total',
      help: 'Errors that are bugs (a connection handler threw, uncaught exception, unhandled rejection); the process kept serving',
      labelNames: ['kind'] as const,
      registers,
    });
    for (const kind of UNEXPECTED_KINDS) this.unexpectedErrors.inc({ kind }, 0);
    if (opts.processMetrics ?? true) collectDefaultMetrics({ register: this.registry });
  }
}
