// The outbound decision (upstream: https://github.com/istio/ztunnel/blob/master/src/proxy/outbound.rs) as one pure function: given the mesh
// state, the source workload and the original destination, say where the connection
// goes. No I/O, no clocks; randomness is injected so tests can pin it.
// Invariants: a service VIP with no usable endpoint is refused, never passed through
// (unless its load balancer mode is Passthrough); unknown destinations pass through.
import { isIP } from 'node:net';
import type { Service, Workload } from '../config/types.js';
import type { ErrorCode } from '../errors.js';
import { spiffeIdOfWorkload } from '../identity/spiffe.js';
import type { MeshReader } from '../state/mesh-view.js';
import { formatHostPort } from '../util/ip.js';

export interface Destination {
  ip: string;
  port: number;
}

export type OutboundRoute =
  | {
      kind: 'hbone';
      /** The next TCP hop: the destination pod's HBONE port. */
      actualDst: Destination;
      /** The CONNECT authority, `ip:targetPort` (IPv6 bracketed). */
      hboneTarget: string;
      target: Destination;
      workload: Workload;
      service: Service | undefined;
      /** The server's URI SAN must be one of these (workload identity + service SANs). */
      expectedIdentities: string[];
    }
  | { kind: 'tcp'; target: Destination; workload: Workload; service: Service | undefined }
  | { kind: 'passthrough'; target: Destination }
  | { kind: 'reject'; code: ErrorCode; reason: string; service: Service | undefined };

export interface RouteOptions {
  network: string;
  /** The loop guard: 15001, 15006, 15008 (+15080 with SOCKS5). */
  illegalPorts: ReadonlySet<number>;
  /** Port of peer ztunnels' HBONE listener. */
  hbonePort: number;
  /** Uniform in [0, 1). */
  random: () => number;
}

function isLoopback(ip: string): boolean {
  return ip.startsWith('127.') || ip === '::1';
}

export function buildOutboundRoute(
  state: MeshReader,
  source: Workload | undefined,
  dst: Destination,
  opts: RouteOptions,
): OutboundRoute {
  if (isLoopback(dst.ip) && opts.illegalPorts.has(dst.port)) {
    return { kind: 'reject', code: 'ZT_ERR_ROUTE_SELF_CALL', reason: 'attempted recursive call to ourselves', service: undefined };
  }
  const network = source?.network ?? opts.network;
  const direct = state.findWorkloadByIp(network, dst.ip);
  if (direct) return routeToWorkload(direct, undefined, dst.ip, dst.port, opts);

  const service = state.findServiceByVip(network, dst.ip, source?.namespace);
  if (!service) return { kind: 'passthrough', target: dst };
  if (service.loadBalancer?.mode === 'Passthrough') return { kind: 'passthrough', target: dst };

  const svcTarget = service.ports.get(dst.port);
  if (svcTarget === undefined) {
    return { kind: 'reject', code: 'ZT_ERR_ROUTE_NO_HEALTHY_UPSTREAM', reason: `no healthy upstream: service ${service.hostname} has no port ${dst.port}`, service };
  }
  const allowUnhealthy = service.loadBalancer?.healthPolicy === 'AllowAll';
  // Capacity-weighted random pick among usable endpoints, in one pass, no arrays built.
  let total = 0;
  for (const ep of service.endpoints.values()) {
    const w = usableEndpoint(state, ep.workloadUid, ep.status, allowUnhealthy);
    if (w && endpointPort(ep.port, svcTarget, w, dst.port) !== undefined) total += w.capacity;
  }
  if (total <= 0) {
    return { kind: 'reject', code: 'ZT_ERR_ROUTE_NO_HEALTHY_UPSTREAM', reason: `no healthy upstream for ${service.hostname}:${dst.port}`, service };
  }
  let pick = opts.random() * total;
  for (const ep of service.endpoints.values()) {
    const w = usableEndpoint(state, ep.workloadUid, ep.status, allowUnhealthy);
    if (!w) continue;
    const port = endpointPort(ep.port, svcTarget, w, dst.port);
    if (port === undefined) continue;
    pick -= w.capacity;
    if (pick < 0) return routeToWorkload(w, service, dst.ip, port, opts);
  }
  // Floating-point edge: fall back to the last usable endpoint.
  for (const ep of [...service.endpoints.values()].reverse()) {
    const w = usableEndpoint(state, ep.workloadUid, ep.status, allowUnhealthy);
    const port = w && endpointPort(ep.port, svcTarget, w, dst.port);
    if (w && port !== undefined) return routeToWorkload(w, service, dst.ip, port, opts);
  }
  return { kind: 'reject', code: 'ZT_ERR_ROUTE_NO_HEALTHY_UPSTREAM', reason: `no healthy upstream for ${service.hostname}`, service };
}

function usableEndpoint(state: MeshReader, uid: string, status: string, allowUnhealthy: boolean): Workload | undefined {
  if (status !== 'Healthy' && !allowUnhealthy) return undefined;
  const w = state.workloadsByUid.get(uid);
  if (!w || w.workloadIps.length === 0 || w.capacity <= 0) return undefined;
  if (w.status !== 'Healthy' && !allowUnhealthy) return undefined;
  return w;
}

/** Endpoint port mapping → service target port if non-zero → app tunnel keeps the port → none. */
function endpointPort(map: ReadonlyMap<number, number>, svcTarget: number, w: Workload, svcPort: number): number | undefined {
  const mapped = map.get(svcPort);
  if (mapped !== undefined && mapped !== 0) return mapped;
  if (svcTarget !== 0) return svcTarget;
  if (w.applicationTunnel?.port !== undefined) return svcPort;
  return undefined;
}

function routeToWorkload(
  w: Workload,
  service: Service | undefined,
  dstIp: string,
  port: number,
  opts: RouteOptions,
): OutboundRoute {
  const ip = chooseIp(w, dstIp);
  const target = { ip, port };
  if (w.protocol === 'HBONE') {
    const expected = [spiffeIdOfWorkload(w)];
    if (service) for (const san of service.subjectAltNames) if (!expected.includes(san)) expected.push(san);
    return {
      kind: 'hbone',
      actualDst: { ip, port: opts.hbonePort },
      hboneTarget: formatHostPort(ip, port),
      target,
      workload: w,
      service,
      expectedIdentities: expected,
    };
  }
  return { kind: 'tcp', target, workload: w, service };
}

/** The original IP when it is the workload's; else one of the same family; else the first. */
function chooseIp(w: Workload, dstIp: string): string {
  if (w.workloadIps.includes(dstIp)) return dstIp;
  const family = isIP(dstIp);
  return w.workloadIps.find((ip) => isIP(ip) === family) ?? (w.workloadIps[0] as string);
}
