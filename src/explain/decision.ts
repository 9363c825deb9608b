// ztunnel's own decisions for one connection, as the JSON the admin endpoints return
// (`/debug/route`, `/debug/authorize`) and explainPath() reads: built from the same pure
// buildOutboundRoute() and PolicyStore.authorize() the data path runs, on the current mesh
// state, plus what an operator needs to see around them (the source workload, every
// endpoint with its weight and health, which policies apply and which of them match).
// Must never: decide differently from the data path (the decision fields come from the
// data path's functions, never re-derived), or carry key material.

import type { Authorization, Service, Workload } from '../config/types.js';
import type { ErrorCode } from '../errors.js';
import { buildAuthzConnection, PolicyStore } from '../authorize/index.js';
import { spiffeIdOfWorkload } from '../identity/spiffe.js';
import { buildOutboundRoute, type Destination } from '../route/outbound-route.js';
import type { MeshReader } from '../state/mesh-view.js';
import { formatHostPort } from '../util/ip.js';

export interface WorkloadSummary {
  uid: string;
  /** `namespace/name`. */
  name: string;
  node: string;
  protocol: 'TCP' | 'HBONE';
  ips: string[];
  identity: string;
  status: string;
}

export interface EndpointSummary {
  workload: string;
  uid: string;
  ips: string[];
  /** Endpoint status and its workload's status. */
  status: string;
  workloadStatus: string | undefined;
  /** Capacity: the weight of the random pick. */
  weight: number;
  /** Target port this endpoint would get for the asked service port. */
  port: number | undefined;
  usable: boolean;
  /** Why not usable. */
  why?: string;
}

export interface RouteDecision {
  /** The node of the ztunnel that answered. */
  node: string | undefined;
  src: string;
  dst: string;
  /** The workload at `src` (any node); undefined when the mesh does not know the address. */
  source: WorkloadSummary | undefined;
  kind: 'hbone' | 'tcp' | 'passthrough' | 'reject';
  service?: {
    name: string;
    hostname: string;
    port: number;
    targetPort: number;
    healthPolicy: string;
    endpoints: EndpointSummary[];
  };
  destination?: WorkloadSummary;
  /** Where the app is reached (`ip:port`, after port translation). */
  target?: string;
  /** The next TCP hop for HBONE (`ip:15008`). */
  actualDst?: string;
  hboneTarget?: string;
  expectedIdentities?: string[];
  /** Destination workload on the answering ztunnel's node: handed over in process. */
  sameNode?: boolean;
  reject?: { code: ErrorCode; reason: string };
}

export interface PolicySummary {
  key: string;
  scope: Authorization['scope'];
  action: Authorization['action'];
  dryRun: boolean;
  /** This policy alone matches this connection. */
  matches: boolean;
}

export interface AuthorizeDecision {
  node: string | undefined;
  src: string;
  dst: string;
  identity: string | undefined;
  /** The workload at the destination IP; undefined = no such workload (the connection is refused). */
  workload: WorkloadSummary | undefined;
  /** Policies that apply to the workload (scope Namespace of its namespace, Global, or named by it). */
  policies: PolicySummary[];
  decision: 'allow' | 'deny' | 'unknown-workload';
  /** The denying policy (`namespace/name`), '' when no allow policy matched. */
  policy?: string;
  reason?: string;
  dryRunNotes?: string[];
}

export function summariseWorkload(w: Workload): WorkloadSummary {
  return {
    uid: w.uid,
    name: `${w.namespace}/${w.name}`,
    node: w.node,
    protocol: w.protocol,
    ips: [...w.workloadIps],
    identity: spiffeIdOfWorkload(w),
    status: w.status,
  };
}

export interface RouteQuery {
  src: string;
  dst: Destination;
  nodeName: string | undefined;
  network: string;
  illegalPorts: ReadonlySet<number>;
  hbonePort: number;
  /** Uniform in [0, 1); default Math.random (the data path's pick). */
  random?: () => number;
}

function describeEndpoints(state: MeshReader, service: Service, svcPort: number): EndpointSummary[] {
  const svcTarget = service.ports.get(svcPort);
  const allowUnhealthy = service.loadBalancer?.healthPolicy === 'AllowAll';
  const out: EndpointSummary[] = [];
  for (const ep of service.endpoints.values()) {
    const w = state.workloadsByUid.get(ep.workloadUid);
    const mapped = ep.port.get(svcPort);
    const port = mapped !== undefined && mapped !== 0 ? mapped : svcTarget !== undefined && svcTarget !== 0 ? svcTarget : undefined;
    let why: string | undefined;
    if (w === undefined) why = 'no workload with this uid';
    else if (ep.status !== 'Healthy' && !allowUnhealthy) why = `endpoint is ${ep.status}`;
    else if (w.status !== 'Healthy' && !allowUnhealthy) why = `workload is ${w.status}`;
    else if (w.workloadIps.length === 0) why = 'workload has no IP';
    else if (w.capacity <= 0) why = 'capacity 0';
    else if (port === undefined && w.applicationTunnel?.port === undefined) why = `no target port for service port ${svcPort}`;
    const summary: EndpointSummary = {
      workload: w === undefined ? ep.workloadUid : `${w.namespace}/${w.name}`,
      uid: ep.workloadUid,
      ips: w === undefined ? [] : [...w.workloadIps],
      status: ep.status,
      workloadStatus: w?.status,
      weight: w?.capacity ?? 0,
      port: port ?? (w?.applicationTunnel?.port !== undefined ? svcPort : undefined),
      usable: why === undefined,
    };
    if (why !== undefined) summary.why = why;
    out.push(summary);
  }
  return out;
}

/** What `GET /debug/route?src=&dst=` answers: the data path's decision for this pair, explained. */
export function buildRouteDecision(state: MeshReader, q: RouteQuery): RouteDecision {
  const sourceWorkload = state.findWorkloadByIp(q.network, q.src);
  // Node mode routes only for the node's own workloads, as the outbound listener does.
  const localSource = sourceWorkload !== undefined && (q.nodeName === undefined || sourceWorkload.node === q.nodeName) ? sourceWorkload : undefined;
  const route = buildOutboundRoute(state, localSource ?? sourceWorkload, q.dst, {
    network: q.network,
    illegalPorts: q.illegalPorts,
    hbonePort: q.hbonePort,
    random: q.random ?? Math.random,
  });
  const out: RouteDecision = {
    node: q.nodeName,
    src: q.src,
    dst: formatHostPort(q.dst.ip, q.dst.port),
    source: sourceWorkload === undefined ? undefined : summariseWorkload(sourceWorkload),
    kind: route.kind,
  };
  const service = route.kind === 'passthrough' ? undefined : route.service;
  if (service !== undefined) {
    out.service = {
      name: `${service.namespace}/${service.name}`,
      hostname: service.hostname,
      port: q.dst.port,
      targetPort: service.ports.get(q.dst.port) ?? 0,
      healthPolicy: service.loadBalancer?.healthPolicy ?? 'OnlyHealthy',
      endpoints: describeEndpoints(state, service, q.dst.port),
    };
  }
  switch (route.kind) {
    case 'hbone':
      out.destination = summariseWorkload(route.workload);
      out.target = formatHostPort(route.target.ip, route.target.port);
      out.actualDst = formatHostPort(route.actualDst.ip, route.actualDst.port);
      out.hboneTarget = route.hboneTarget;
      out.expectedIdentities = [...route.expectedIdentities];
      out.sameNode = q.nodeName !== undefined && route.workload.node === q.nodeName;
      break;
    case 'tcp':
      out.destination = summariseWorkload(route.workload);
      out.target = formatHostPort(route.target.ip, route.target.port);
      break;
    case 'passthrough':
      out.target = formatHostPort(route.target.ip, route.target.port);
      break;
    case 'reject':
      out.reject = { code: route.code, reason: route.reason };
      break;
  }
  return out;
}

export interface AuthorizeQuery {
  src: string;
  dst: Destination;
  /** Verified peer identity (`spiffe://…`); undefined for plaintext (15006). */
  identity: string | undefined;
  nodeName: string | undefined;
  network: string;
}

function appliesTo(p: Authorization, w: Workload): boolean {
  if (p.scope === 'Global') return true;
  if (p.scope === 'Namespace') return p.namespace === w.namespace;
  return w.authorizationPolicies.includes(`${p.namespace}/${p.name}`);
}

/** What `GET /debug/authorize?src=&dst=&identity=` answers, from the store the data path uses. */
export function buildAuthorizeDecision(state: MeshReader, policies: PolicyStore, q: AuthorizeQuery): AuthorizeDecision {
  const base = { node: q.nodeName, src: q.src, dst: formatHostPort(q.dst.ip, q.dst.port), identity: q.identity };
  const w = state.findWorkloadByIp(q.network, q.dst.ip);
  if (w === undefined) return { ...base, workload: undefined, policies: [], decision: 'unknown-workload', reason: `no workload has the address ${q.dst.ip}` };
  const conn = buildAuthzConnection(q.src, q.dst.ip, q.dst.port, q.identity);
  const d = policies.authorize(w, conn);
  const applicable: PolicySummary[] = [];
  for (const p of state.config.policies) {
    if (!appliesTo(p, w)) continue;
    // This policy alone: an Allow allows only when it matches, a Deny denies only when it matches.
    const alone = new PolicyStore([{ ...p, dryRun: false }]).authorize(w, conn);
    applicable.push({
      key: `${p.namespace}/${p.name}`,
      scope: p.scope,
      action: p.action,
      dryRun: p.dryRun,
      matches: p.action === 'Allow' ? alone.kind === 'allow' : alone.kind === 'deny',
    });
  }
  const out: AuthorizeDecision = { ...base, workload: summariseWorkload(w), policies: applicable, decision: d.kind };
  if (d.kind === 'deny') {
    out.policy = d.policy;
    out.reason = d.reason;
  }
  if (d.dryRunNotes !== undefined) out.dryRunNotes = [...d.dryRunNotes];
  return out;
}
