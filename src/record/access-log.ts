// Access-log fields of one connection (upstream: https://github.com/istio/ztunnel/blob/master/src/proxy/metrics.rs), built once when a line is
// actually going to be written. Pure: writing is LogSink's job.
// Orientation: outbound lines speak for the client (bytes_sent = client → server),
// inbound lines for the server (bytes_sent = server → client).
// Absent values are omitted, never written as empty strings or "unknown".
import type { Workload } from '../config/types.js';
import type { ByteCounters, ConnectionContext } from './types.js';

export type AccessFields = Record<string, string | number>;

function put(fields: AccessFields, key: string, value: string | undefined): void {
  if (value !== undefined && value !== '') fields[key] = value;
}

function clusterOf(w: Workload | undefined, localClusterId: string): string | undefined {
  if (w === undefined) return undefined;
  return w.clusterId || localClusterId;
}

/** Context fields shared by 'connection opened' and 'connection complete'. */
export function buildContextFields(ctx: ConnectionContext, localClusterId: string): AccessFields {
  const fields: AccessFields = {};
  const src = ctx.srcWorkload;
  const dst = ctx.dstWorkload;
  put(fields, 'src.addr', ctx.srcAddr);
  put(fields, 'src.workload', src === undefined ? undefined : src.name || src.canonicalName);
  put(fields, 'src.namespace', src?.namespace);
  put(fields, 'src.identity', ctx.srcIdentity);
  put(fields, 'src.cluster', clusterOf(src, localClusterId));
  put(fields, 'dst.addr', ctx.dstAddr);
  put(fields, 'dst.hbone_addr', ctx.hboneAddr);
  put(fields, 'dst.service', ctx.dstService?.hostname);
  put(fields, 'dst.workload', dst?.name);
  put(fields, 'dst.namespace', dst?.namespace ?? ctx.dstService?.namespace);
  // dstIdentity is also set for plain TCP destinations (for metrics); the log claims an
  // identity only when mTLS proved it.
  put(fields, 'dst.identity', ctx.securityPolicy === 'mutual_tls' ? ctx.dstIdentity : undefined);
  put(fields, 'dst.cluster', clusterOf(dst, localClusterId));
  fields['direction'] = ctx.direction;
  return fields;
}

/** Fields of 'connection complete'. */
export function buildCompleteFields(
  ctx: ConnectionContext,
  bytes: ByteCounters,
  durationMs: number,
  localClusterId: string,
): AccessFields {
  const fields = buildContextFields(ctx, localClusterId);
  const outbound = ctx.direction === 'outbound';
  fields['bytes_sent'] = outbound ? bytes.clientToServer : bytes.serverToClient;
  fields['bytes_recv'] = outbound ? bytes.serverToClient : bytes.clientToServer;
  fields['duration'] = `${Math.max(0, Math.round(durationMs))}ms`;
  return fields;
}

/** Fields of an early 'connection failed' (before a full context exists). */
export function buildEarlyDenyFields(
  direction: 'outbound' | 'inbound',
  srcAddr: string,
  dstAddr: string,
  error: string,
  extra: Readonly<Record<string, string>> | undefined,
): AccessFields {
  const fields: AccessFields = {};
  put(fields, 'src.addr', srcAddr);
  put(fields, 'dst.addr', dstAddr);
  fields['direction'] = direction;
  if (extra !== undefined) Object.assign(fields, extra);
  fields['error'] = error;
  return fields;
}
